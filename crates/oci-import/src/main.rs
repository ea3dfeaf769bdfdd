//! `unbit-oci-import [--replace] [--distros DIR] IMAGE NAME`: see the crate docs and
//! docs/custom-distros.md. Run inside the custom_distros_storage container, as its uid.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: unbit-oci-import [--replace] [--distros DIR] IMAGE NAME

Unpacks IMAGE (a `docker save` or `docker export` tarball, plain or gzip, or an OCI image
layout directory or tarball) into DIR/NAME (DIR defaults to ~/distros), ready to be registered
with POST /api/custom_distros/<this container's uid> {\"name\": ..., \"path\": \"NAME\"}.
Device nodes and FIFOs are dropped, setuid/setgid bits cleared; a path leaving the image or
passing through a symlink stops the import and leaves nothing behind.";

fn main() -> ExitCode {
    let mut replace = false;
    let mut distros: Option<PathBuf> = None;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--replace" => replace = true,
            "--distros" => match args.next() {
                Some(d) => distros = Some(d.into()),
                None => return usage("--distros needs a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            _ => positional.push(a),
        }
    }
    let [image, name] = positional.as_slice() else { return usage("expected IMAGE and NAME") };
    let distros = match distros.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("distros"))) {
        Some(d) => d,
        None => return usage("no --distros and no HOME"),
    };
    let started = std::time::Instant::now();
    match oci_import::import(image.as_ref(), &distros, name, replace) {
        Ok(report) => {
            println!(
                "imported {image} as {} in {:.1} s",
                distros.join(name).display(),
                started.elapsed().as_secs_f64()
            );
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unbit-oci-import: {image}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("unbit-oci-import: {why}\n\n{USAGE}");
    ExitCode::from(2)
}
