//! `stratum-docgen OUTDIR`: writes Stratum's man pages (`OUTDIR/man/manN/`) and shell
//! completions (`OUTDIR/bash-completion/…`, `OUTDIR/zsh/…`, `OUTDIR/fish/…`, the layout of
//! `$(PREFIX)/share`) from the command-line definitions. Needs no root and no sysroot.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: stratum-docgen OUTDIR");
        std::process::exit(2);
    };
    match stratum_docgen::generate(std::path::Path::new(out)) {
        Ok(files) => eprintln!("wrote {} files into {}", files.len(), out.to_string_lossy()),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
