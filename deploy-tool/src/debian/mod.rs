//! Debian's formats, as images and package layering read them: deb822 paragraphs, version
//! order, the dpkg database, and the rules for the names a package gives itself.

pub mod deb822;
pub mod dpkgdb;
pub mod names;
pub mod version;
