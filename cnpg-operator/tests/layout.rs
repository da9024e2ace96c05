//! The source layout stays readable top-down: no file of a crate imports another file of the
//! same crate that imports it back, directly or through others. A file's imports are the
//! `crate::`, `super::` and `self::` paths in its code (comments left out) and, in a module
//! with children, the paths that start with a child's name; each is charged to the deepest
//! module file it reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, from the crate root: `["plugin", "access"]`.
type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/kube/platform.rs` → `kube::platform`; `src/kube/mod.rs` → `kube`; `lib.rs` → root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code without comments and without the contents of string literals.
fn code(text: &str) -> String {
    let mut out = String::new();
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
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            // A char literal such as '{' (lifetimes have no closing quote nearby).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                } else if rest.starts_with('\\') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code without the bodies of inline modules (`mod tests { ... }`): their `super` is
/// the file itself, and tests beside the code may reach anything.
fn without_inline_modules(code: &str) -> String {
    let s: Vec<char> = code.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_');
        if boundary && s[i..].starts_with(&['m', 'o', 'd', ' ']) {
            let (name, j) = ident_at(&s, skip_ws(&s, i + 4));
            let k = skip_ws(&s, j);
            if !name.is_empty() && k < s.len() && s[k] == '{' {
                let mut depth = 0;
                let mut end = k;
                for (n, c) in s.iter().enumerate().skip(k) {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = n;
                        break;
                    }
                }
                i = end + 1;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn ident_at(s: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
        i += 1;
    }
    (s[start..i].iter().collect(), i)
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Every path starting at `i` (after its first segment, already in `prefix`): `a::b::c`,
/// and the expansions of `a::{b, c::d}`.
fn paths_from(s: &[char], mut i: usize, prefix: Module, out: &mut Vec<Module>) -> usize {
    let mut path = prefix;
    loop {
        i = skip_ws(s, i);
        if i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':' {
            i = skip_ws(s, i + 2);
            if i < s.len() && s[i] == '{' {
                i += 1;
                loop {
                    i = skip_ws(s, i);
                    if i >= s.len() || s[i] == '}' {
                        out.push(path.clone());
                        return i + 1;
                    }
                    let (id, j) = ident_at(s, i);
                    if id.is_empty() {
                        i += 1; // `*` or `,`
                        continue;
                    }
                    let mut sub = path.clone();
                    sub.push(id);
                    i = paths_from(s, j, sub, out);
                }
            }
            let (id, j) = ident_at(s, i);
            if id.is_empty() {
                break;
            }
            path.push(id);
            i = j;
        } else {
            break;
        }
    }
    out.push(path);
    i
}

/// The module paths a file names, made absolute.
fn references(code: &str, me: &Module, children: &BTreeSet<String>) -> Vec<Module> {
    let s: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary =
            i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_' || s[i - 1] == ':');
        let (id, j) = ident_at(&s, i);
        if id.is_empty() {
            i += 1;
            continue;
        }
        let k = skip_ws(&s, j);
        let is_path = k + 1 < s.len() && s[k] == ':' && s[k + 1] == ':';
        if boundary && is_path {
            let base: Option<Module> = match id.as_str() {
                "crate" => Some(vec![]),
                "self" => Some(me.clone()),
                "super" => {
                    let mut m = me.clone();
                    m.pop();
                    Some(m)
                }
                child if children.contains(child) => {
                    let mut m = me.clone();
                    m.push(child.to_owned());
                    Some(m)
                }
                _ => None,
            };
            if let Some(base) = base {
                let mut paths = Vec::new();
                i = paths_from(&s, j, base, &mut paths);
                for p in paths {
                    // Each further `super` climbs one more level.
                    let mut abs = Module::new();
                    for seg in p {
                        if seg == "super" {
                            abs.pop();
                        } else {
                            abs.push(seg);
                        }
                    }
                    found.push(abs);
                }
                continue;
            }
        }
        i = j;
    }
    found
}

/// Cycles among the files of the crate whose sources are in `src`, each as its files.
fn cycles(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, file) in &modules {
        let text = std::fs::read_to_string(file).expect("readable source");
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
            .map(|c| c[m.len()].clone())
            .collect();
        for path in references(&without_inline_modules(&code(&text)), m, &children) {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains_key(p))
                .expect("the crate root is a module");
            if &target != m {
                edges.entry(m.clone()).or_default().insert(target);
            }
        }
    }
    // A file is in a cycle when it can reach itself; report each cycle's files once.
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for n in edges.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<Module, BTreeSet<Module>> =
        modules.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut reported = BTreeSet::new();
    let mut out = Vec::new();
    for m in modules.keys() {
        if reported.contains(m) || !reachable[m].contains(m) {
            continue;
        }
        let group: Vec<Module> = modules
            .keys()
            .filter(|n| reachable[m].contains(*n) && reachable[*n].contains(m))
            .cloned()
            .collect();
        reported.extend(group.iter().cloned());
        out.push(
            group
                .iter()
                .map(|g| {
                    modules[g]
                        .strip_prefix(src)
                        .expect("under src")
                        .display()
                        .to_string()
                })
                .collect(),
        );
    }
    out
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    for krate in ["cnpg-core", "cnpg-instance", "cnpg-operator"] {
        for cycle in cycles(&root.join(krate).join("src")) {
            problems.push(format!("{krate}: {}", cycle.join(" ↔ ")));
        }
    }
    assert!(
        problems.is_empty(),
        "files that import each other (directly or through others):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("plugin")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod plugin;\n").expect("write");
    std::fs::write(
        src.join("plugin/mod.rs"),
        "pub mod a;\npub mod b;\n// use crate::plugin::b; (a comment)\n",
    )
    .expect("write");
    std::fs::write(
        src.join("plugin/a.rs"),
        "use super::{b::{Thing, Other}, c};\nfn f() { let s = \"crate::x::{\"; }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("plugin/b.rs"),
        "fn g() { crate::plugin::a::f(); }\n",
    )
    .expect("write");
    assert_eq!(
        cycles(src),
        vec![vec!["plugin/a.rs".to_owned(), "plugin/b.rs".to_owned()]]
    );
    // `super` in an inline test module is the file itself.
    std::fs::write(
        src.join("plugin/b.rs"),
        "fn g() {}\n#[cfg(test)]\nmod tests { use super::*; use crate::plugin::a; }\n",
    )
    .expect("write");
    assert!(cycles(src).is_empty());
}
