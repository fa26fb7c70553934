//! Debian's formats, as images and package layering read them: deb822 paragraphs, version
//! order and the dpkg database.

pub mod deb822;
pub mod dpkgdb;
pub mod version;
