//! Builds the web console (`web/`) with Vite and embeds the result.
//!
//! 1. `npm ci` when `web/node_modules` is missing or older than
//!    `package-lock.json`;
//! 2. `vite build` into `$OUT_DIR/dist` (Vite also writes a `.gz` next to
//!    each compressible file);
//! 3. `$OUT_DIR/assets.rs`: one `Asset` per file, its bytes by `include_bytes!`.
//!
//! Cargo reruns this only when something under `web/` that goes into the
//! bundle changes, so a Rust-only rebuild costs nothing here.
//!
//! `PROMPTOPS_CONSOLE_DIST=DIR` embeds an already built `dist/` instead (an
//! image whose build stage has no Node). Without Node and npm the binary still
//! builds: it embeds one page that says how to get the console, and the build
//! prints the same as a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

const NO_NODE: &str = "the web console was not built: Node.js 20.19+ and npm are needed \
(Debian: apt-get install -y nodejs npm), then rebuild; the API works without it";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let web = manifest.join("../../web").canonicalize()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-env-changed=PROMPTOPS_CONSOLE_DIST");
    for input in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }

    let dist = match std::env::var_os("PROMPTOPS_CONSOLE_DIST") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => build_with_vite(&web, &out)?,
    };
    let mut files = Vec::new();
    if let Some(dist) = &dist {
        collect(dist, dist, &mut files)?;
    }
    files.sort();
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (relative, absolute) in &files {
        if relative.ends_with(".gz") {
            continue;
        }
        let gz = files
            .iter()
            .find(|(r, _)| *r == format!("{relative}.gz"))
            .map(|(_, a)| format!("Some(include_bytes!({:?}))", a.display().to_string()))
            .unwrap_or_else(|| "None".to_owned());
        code.push_str(&format!(
            "    Asset {{ path: {:?}, body: include_bytes!({:?}), gzip: {gz} }},\n",
            format!("/{relative}"),
            absolute.display().to_string(),
        ));
    }
    code.push_str("];\n");
    let missing = if dist.is_none() {
        format!("Some({NO_NODE:?})")
    } else {
        "None".to_owned()
    };
    code.push_str(&format!("pub static NOT_BUILT: Option<&str> = {missing};\n"));
    std::fs::write(out.join("assets.rs"), code)?;
    Ok(())
}

/// Runs npm and Vite; `None` (with a warning) when npm is not installed.
fn build_with_vite(web: &Path, out: &Path) -> Result<Option<PathBuf>, Box<dyn std::error::Error>> {
    if Command::new("npm").arg("--version").output().is_err() {
        println!("cargo:warning={NO_NODE}");
        return Ok(None);
    }
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (modified(&lock), modified(&installed)) {
        (Some(lock), Some(installed)) => lock > installed,
        _ => true,
    };
    if stale {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(web))?;
    }
    let dist = out.join("dist");
    run(Command::new("npm")
        .args([
            "exec",
            "--",
            "vite",
            "build",
            "--logLevel",
            "warn",
            "--emptyOutDir",
            "--outDir",
        ])
        .arg(&dist)
        .current_dir(web))?;
    Ok(Some(dist))
}

/// Runs a command with its output on stderr: a build script's stdout is
/// read by cargo as instructions.
fn run(command: &mut Command) -> Result<(), Box<dyn std::error::Error>> {
    let status = command.stdout(std::io::stderr()).status()?;
    if !status.success() {
        return Err(format!("{command:?} failed with {status}").into());
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            out.push((relative, path));
        }
    }
    Ok(())
}
