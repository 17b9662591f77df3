//! The import rule of this crate, checked: each module imports only from the layers below it
//! (see the crate documentation), nothing below `state` names `AppState`, and nothing below the
//! API modules imports an API module. A `use crate::...` that breaks the rule fails this test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import from a lower layer or from its own module.
const LAYERS: &[&[&str]] = &[
    &["config", "error", "metrics"],
    &["secrets"],
    &["settings"],
    &["clients"],
    &["network", "files", "audit"],
    &["backup"],
    &["state"],
    &["tasks"],
    &["api"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and string literals, so a doc link or a message that
/// mentions a module is not an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules a file names after `crate::`, including inside `crate::{a, b::c}`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn each_module_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("inside src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root and the binary wire everything together; this test is not a layer.
        if matches!(top.as_str(), "lib" | "main" | "layers") {
            continue;
        }
        let own = layer_of(&top).unwrap_or_else(|| {
            panic!(
                "src/{} is in no layer: add `{top}` to LAYERS",
                rel.display()
            )
        });
        let code = code_only(&std::fs::read_to_string(file).expect("read"));
        for import in crate_imports(&code) {
            let Some(theirs) = layer_of(&import) else {
                continue;
            };
            if import != top && theirs >= own {
                broken.push(format!(
                    "src/{} ({top}, layer {own}) imports crate::{import} (layer {theirs})",
                    rel.display()
                ));
            }
        }
        if own < layer_of("state").unwrap_or(0) && code.contains("AppState") {
            broken.push(format!(
                "src/{} names AppState below the state layer",
                rel.display()
            ));
        }
        checked += 1;
    }
    assert!(
        checked > 20,
        "only {checked} files checked: is src/ where it was?"
    );
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_plain_imports_but_not_comments() {
    let code = code_only(
        "use crate::{state::AppState, error};\n// crate::api in a comment\nlet s = \"crate::tasks\";\nfn f() { crate::network::stopped(); }\n",
    );
    let found: Vec<String> = crate_imports(&code).into_iter().collect();
    assert_eq!(found, vec!["error", "network", "state"]);
}
