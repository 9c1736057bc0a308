//! The layout invariant of ARCHITECTURE.md: no import cycles between modules. `config/` sits
//! below the adapters and the reconciler, so it names no module above it; `daemon/` returns
//! its own errors and names nothing of `cli`.

use std::fs;
use std::path::Path;

/// Every `crate::MODULE` a module's files name, with the file and line.
fn crate_paths(dir: &Path) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push((file.display().to_string(), n + 1, name));
            }
        }
    }
    out
}

fn assert_names_only(module: &str, allowed: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let wrong: Vec<_> = crate_paths(&dir)
        .into_iter()
        .filter(|(_, _, name)| !allowed.contains(&name.as_str()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{module}/ may name only {allowed:?} of the crate, but names: {wrong:#?}"
    );
}

#[test]
fn config_names_nothing_above_it() {
    assert_names_only("config", &["config", "model", "budget"]);
}

#[test]
fn daemon_names_nothing_of_the_cli() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("daemon");
    let wrong: Vec<_> = crate_paths(&dir)
        .into_iter()
        .filter(|(_, _, name)| name == "cli")
        .collect();
    assert!(wrong.is_empty(), "daemon/ names cli: {wrong:#?}");
}
