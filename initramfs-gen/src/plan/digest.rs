//! The digest of a plan: one BLAKE3 over everything the image is made from, so a cached image
//! can be reused exactly when a build would produce the same bytes again.

use anyhow::Result;
use serde::Serialize;

use super::Plan;
use crate::config::Mode;
use crate::digest::InputHasher;

/// The spec's settings that shape the image (thread counts do not; the input digest itself is
/// what is being computed).
#[derive(Serialize)]
struct Settings<'a> {
    mode: Mode,
    default_modules: &'a [String],
    add_modules: &'a [String],
    omit_modules: &'a [String],
    includes: Vec<String>,
    firmware: bool,
    zstd_level: i32,
    source_date_epoch: u64,
}

impl Plan {
    /// The BLAKE3 digest (hex) of the plan's inputs, with the caller's `extra` fields (say, the
    /// words the build was asked for) hashed after the generator's name and version.
    ///
    /// Hashed, each as a named length-prefixed field: the generator and its version, `extra`,
    /// the settings of the spec, the kernel version, the kernel image (or a `<missing>` marker),
    /// each configuration file (by its path in the root) and the init binary, the included
    /// trees (paths, modes, symlink targets, contents), depmod's index files (or `<missing>`),
    /// each module's decompressed contents by path, and each declared firmware file by name
    /// (or `<missing>`).
    pub fn input_digest(&self, extra: &[(&str, &[u8])]) -> Result<String> {
        let spec = &self.spec;
        let opts = &spec.options;
        let mut d = InputHasher::new();
        d.field(
            "generator",
            concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        for (name, data) in extra {
            d.field(&format!("extra:{name}"), data);
        }
        let settings = Settings {
            mode: spec.mode,
            default_modules: &opts.modules,
            add_modules: &spec.add_modules,
            omit_modules: &spec.omit_modules,
            includes: spec
                .includes
                .iter()
                .map(|i| format!("{}:{}", i.src, i.dest))
                .collect(),
            firmware: spec.firmware,
            zstd_level: opts.zstd_level,
            source_date_epoch: opts.source_date_epoch,
        };
        d.field("settings", &serde_json::to_vec(&settings)?);
        d.field("kver", opts.kver.as_bytes());
        match &self.vmlinuz {
            Some(p) => d.file("vmlinuz", p)?,
            None => d.optional("vmlinuz", None),
        }
        for p in &self.config_files {
            let rel = p.strip_prefix(&opts.root).unwrap_or(p).to_string_lossy();
            d.file(&format!("config:{rel}"), p)?;
        }
        d.field("init", &self.init.data);
        for inc in &self.includes {
            let name = format!("include:{}:{}", inc.include.src, inc.include.dest);
            d.field("include", name.as_bytes());
            for e in &inc.entries {
                d.tree_entry(&e.path, e.mode, &e.node);
            }
        }
        for (name, data) in self.index.iter() {
            d.optional(name, data);
        }
        for m in &self.modules {
            d.field(&format!("module:{}", m.module.path), &m.data);
        }
        for fw in &self.firmware {
            d.optional(&format!("firmware:{}", fw.name), fw.data.as_deref());
        }
        Ok(d.finish())
    }
}
