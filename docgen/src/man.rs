//! Man pages: one per command and subcommand of a clap tree (`stratum-compose-rootfs(8)`),
//! rendered by clap_mangen from the definitions the programs parse, with the written
//! sections of `docgen/man/NAME.SECTION` added; and standalone pages (configuration files,
//! `stratum-prepare-root`, which has no clap definition) written whole in that markup.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::markup::{self, Block, Text};

/// The man section of administrator commands.
pub const COMMANDS: &str = "8";

/// Pages named other than their command path: `stratum initramfs` would take the name of
/// the program `stratum-initramfs`.
const RENAMES: &[(&str, &str)] = &[("stratum-initramfs", "stratum-initramfs-client")];

/// The page name of the (sub)command at `path` (`["stratum", "compose", "rootfs"]`).
pub fn page_name(path: &[String]) -> String {
    let name = path.join("-");
    match RENAMES
        .iter()
        .find(|(from, _)| path.len() > 1 && *from == name)
    {
        Some((_, to)) => to.to_string(),
        None => name,
    }
}

/// Sections written after the generated OPTIONS and SUBCOMMANDS, in man-pages(7) order;
/// written sections not listed come before EXIT STATUS, in the order written.
const TRAILING: &[&str] = &["EXIT STATUS", "SEE ALSO"];

/// Where the written text of `page` is, and the values `@NAME@` stands for.
pub struct Sources<'a> {
    pub text_dir: &'a Path,
    pub values: &'a BTreeMap<&'static str, String>,
    /// `(status, meaning)` rows of the exit-status table.
    pub exit_codes: &'a [(String, String)],
    pub version: &'a str,
    /// The date in the pages' footer (from `SOURCE_DATE_EPOCH`, for reproducible pages).
    pub date: &'a str,
}

/// A generated page: its file name (`stratum-upgrade.8`) and roff source.
pub struct Page {
    pub file: String,
    pub roff: String,
}

/// Pages for `cmd` (built) and, recursively, its visible subcommands, with a `.so` page for
/// each visible alias of a subcommand (`stratum-update.8`).
pub fn command_pages(cmd: &clap::Command, src: &Sources) -> Result<Vec<Page>> {
    let mut pages = Vec::new();
    walk(cmd, &[], src, &mut pages)?;
    Ok(pages)
}

fn walk(cmd: &clap::Command, parents: &[String], src: &Sources, out: &mut Vec<Page>) -> Result<()> {
    let mut path = parents.to_vec();
    path.push(cmd.get_name().to_string());
    let name = page_name(&path);
    out.push(Page {
        file: format!("{name}.{COMMANDS}"),
        roff: command_page(cmd, &path, src)?,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &path, src, out)?;
        let target = page_name(&[path.clone(), vec![sub.get_name().to_string()]].concat());
        for alias in sub.get_visible_aliases() {
            out.push(Page {
                file: format!("{name}-{alias}.{COMMANDS}"),
                roff: format!(".so man{COMMANDS}/{target}.{COMMANDS}\n"),
            });
        }
    }
    Ok(())
}

/// The written text for page `file` (`stratum-upgrade.8`), if any.
fn written(file: &str, src: &Sources) -> Result<Option<Text>> {
    let p = src.text_dir.join(file);
    match fs::read_to_string(&p) {
        Ok(s) => Text::parse(&p.display().to_string(), &s, src.values).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn command_page(cmd: &clap::Command, path: &[String], src: &Sources) -> Result<String> {
    let name = page_name(path);
    let text = written(&format!("{name}.{COMMANDS}"), src)?.unwrap_or_default();
    let top = path.len() == 1;
    // Global options are described once, on the top page; the others name them.
    let globals: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set() && !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let page_cmd = if top {
        cmd.clone()
    } else {
        cmd.clone()
            .mut_args(|a| if a.is_global_set() { a.hide(true) } else { a })
    };
    let man = Man::new(page_cmd.clone())
        .title(name.to_uppercase())
        .section(COMMANDS)
        .date(src.date)
        .source(format!("Stratum {}", src.version))
        .manual("Stratum Manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    let mut roff = Roff::new();
    if let Some(b) = text.section("DESCRIPTION") {
        markup::render(&mut roff, b);
    }
    roff.to_writer(&mut out)?;
    if page_cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    let mut roff = Roff::new();
    subcommands(&mut roff, &page_cmd, path);
    if !top && !globals.is_empty() {
        roff.control("SH", ["GLOBAL OPTIONS"]);
        roff.text([roman(format!(
            "{} apply as described in {}({COMMANDS}).",
            globals.join(", "),
            path[0]
        ))]);
    }
    render_written(&mut roff, &text, &["DESCRIPTION"]);
    roff.control("SH", ["EXIT STATUS"]);
    match text.section("EXIT STATUS") {
        Some(b) => markup::render(&mut roff, b),
        None if top && !src.exit_codes.is_empty() => exit_table(&mut roff, src.exit_codes),
        None => {
            roff.text([roman(format!(
                "See EXIT STATUS in {}({COMMANDS}).",
                path[0]
            ))]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    match text.section("SEE ALSO") {
        Some(b) => markup::render(&mut roff, b),
        None if !top => {
            let parent = path[..path.len() - 1].join("-");
            roff.text([roman(format!("{parent}({COMMANDS})"))]);
        }
        None => {}
    }
    roff.to_writer(&mut out)?;
    String::from_utf8(out).context("man page is not UTF-8")
}

/// The SUBCOMMANDS section: each visible subcommand with its page and summary.
fn subcommands(roff: &mut Roff, cmd: &clap::Command, path: &[String]) {
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        return;
    }
    roff.control("SH", ["SUBCOMMANDS"]);
    for sub in subs {
        let page = page_name(&[path.to_vec(), vec![sub.get_name().to_string()]].concat());
        let mut names = vec![sub.get_name().to_string()];
        names.extend(sub.get_visible_aliases().map(str::to_string));
        roff.control("TP", []);
        roff.text([
            bold(names.join(", ")),
            roman(format!(" - {page}({COMMANDS})")),
        ]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
    }
}

/// Appends the written sections other than `skip` and the trailing ones.
fn render_written(roff: &mut Roff, text: &Text, skip: &[&str]) {
    for (heading, blocks) in &text.sections {
        if skip.contains(&heading.as_str()) || TRAILING.contains(&heading.as_str()) {
            continue;
        }
        roff.control("SH", [heading.as_str()]);
        markup::render(roff, blocks);
    }
}

fn exit_table(roff: &mut Roff, rows: &[(String, String)]) {
    for (status, meaning) in rows {
        markup::render(roff, &[Block::Definition(status.clone(), meaning.clone())]);
    }
}

/// A page written whole (`stratum.toml.5`): its NAME line comes from `# name - what`.
pub fn standalone_page(file: &str, src: &Sources) -> Result<Page> {
    let Some(text) = written(file, src)? else {
        bail!("{file}: no such written page");
    };
    let (name, section) = file
        .rsplit_once('.')
        .with_context(|| format!("{file}: expected NAME.SECTION"))?;
    let Some(name_line) = &text.name_line else {
        bail!("{file}: a standalone page starts with `# {name} - what it is`");
    };
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            name.to_uppercase().as_str(),
            section,
            src.date,
            &format!("Stratum {}", src.version),
            "Stratum Manual",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(name_line.as_str())]);
    for (heading, blocks) in &text.sections {
        roff.control("SH", [heading.as_str()]);
        if heading == "EXIT STATUS" && blocks.is_empty() {
            exit_table(&mut roff, src.exit_codes);
        }
        markup::render(&mut roff, blocks);
    }
    Ok(Page {
        file: file.to_string(),
        roff: roff.to_roff(),
    })
}

/// The written files without a clap command: every `NAME.SECTION` in the text directory
/// whose NAME is not one of `commands` (page names such as `stratum-upgrade`).
pub fn standalone_files(text_dir: &Path, commands: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(text_dir).with_context(|| format!("reading {}", text_dir.display()))? {
        let e = e?;
        let file = e.file_name().to_string_lossy().into_owned();
        let Some((name, _)) = file.rsplit_once('.') else {
            continue;
        };
        if !commands.iter().any(|c| c == name) {
            out.push(file);
        }
    }
    out.sort();
    Ok(out)
}

/// The directory `manN` under `out` for `file` (`stratum.toml.5` -> `out/man5`).
pub fn dir_for(out: &Path, file: &str) -> PathBuf {
    let section = file.rsplit_once('.').map_or("8", |(_, s)| s);
    out.join(format!("man{section}"))
}
