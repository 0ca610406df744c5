//! The deployment template against the code it deploys (`deploy/aws/template.yaml`):
//!
//! - the function's role allows exactly the AWS operations the code the function links calls:
//!   a call added without its permission fails, and so does a permission no code uses;
//! - the function's environment names only variables the code reads;
//! - the alarms read metrics the function writes, in its namespace, without dimensions;
//! - the state table has every index the DynamoDB store queries.
//!
//! How the operations are found: `cargo metadata` names the workspace crates the function links
//! (normal dependencies of `jit-lambda`, followed through the workspace) and, for each, the AWS
//! SDK crates it depends on. An SDK crate has one directory per operation under
//! `src/operation/` (snake_case, as the client's method). Every `.op_name()` call in a linked
//! crate's source (comments, string literals and `#[cfg(test)]` items left out) whose name is an
//! operation of a service that crate depends on is a call of that operation; its IAM action is
//! the PascalCase name under the service's IAM prefix. Exceptions, each written below:
//! `TransactWriteItems` is authorised per item, and a schedule names a role (`iam:PassRole`).
//!
//! What it cannot see: an operation called through a client of a service whose SDK crate the
//! calling crate does not depend on itself (a client handed over from another crate). Keep each
//! crate's calls on its own SDK dependencies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use regex::Regex;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The AWS SDK crates the backend uses, with the IAM prefix of each service.
const SERVICES: [(&str, &str); 5] = [
    ("aws-sdk-dynamodb", "dynamodb"),
    ("aws-sdk-ssoadmin", "sso"),
    ("aws-sdk-identitystore", "identitystore"),
    ("aws-sdk-secretsmanager", "secretsmanager"),
    ("aws-sdk-scheduler", "scheduler"),
];

/// Files of linked crates whose calls the function never makes, and why.
const NOT_RUN_BY_THE_FUNCTION: [(&str, &str); 1] = [(
    "crates/jit-store/src/dynamo/tables.rs",
    "DynamoStore::create_tables: tests and local runs make the tables this way; the stack makes \
     the function's",
)];

/// The function's crate, whose binary is the function.
const FUNCTION: &str = "jit-lambda";
const TEMPLATE: &str = "deploy/aws/template.yaml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

// ------------------------------------------------------------------------------------------
// The code side.

/// What `cargo metadata` says about the function's build.
#[derive(Debug)]
struct Linked {
    /// Operation names (snake_case) per IAM prefix.
    ops: BTreeMap<&'static str, BTreeSet<String>>,
    /// The workspace crates linked into the function.
    crates: Vec<LinkedCrate>,
}

#[derive(Debug)]
struct LinkedCrate {
    name: String,
    /// The crate's source files that go into the function.
    files: Vec<PathBuf>,
    /// IAM prefixes of the SDK crates it depends on.
    services: Vec<&'static str>,
    /// AWS SDK crates it depends on that [`SERVICES`] does not name.
    unknown_sdks: Vec<String>,
}

fn str_of<'a>(v: &'a Json, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("cargo metadata: no {k}"))
}

fn linked() -> &'static Linked {
    static L: OnceLock<Linked> = OnceLock::new();
    L.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(root().join("Cargo.toml"))
            .output()
            .expect("running cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: Json = serde_json::from_slice(&out.stdout).unwrap();
        let packages: BTreeMap<&str, &Json> = m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (str_of(p, "id"), p))
            .collect();
        let members: BTreeSet<&str> = m["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let nodes: BTreeMap<&str, &Json> = m["resolve"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (str_of(n, "id"), n))
            .collect();
        // Normal (not dev, not build) dependencies of a package.
        let normal_deps = |id: &str| -> Vec<&str> {
            nodes[id]["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| str_of(d, "pkg"))
                .collect()
        };

        let mut ops = BTreeMap::new();
        for (sdk, prefix) in SERVICES {
            let pkgs: Vec<&&Json> = packages
                .values()
                .filter(|p| str_of(p, "name") == sdk)
                .collect();
            assert_eq!(pkgs.len(), 1, "one version of {sdk} in the build");
            let dir = Path::new(str_of(pkgs[0], "manifest_path"))
                .parent()
                .unwrap()
                .join("src/operation");
            let names: BTreeSet<String> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().unwrap().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.len() > 5,
                "{sdk}: no operations under {}",
                dir.display()
            );
            ops.insert(prefix, names);
        }

        let function = *members
            .iter()
            .find(|id| str_of(packages[**id], "name") == FUNCTION)
            .unwrap();
        let mut seen = BTreeSet::from([function]);
        let mut todo = vec![function];
        let mut crates = Vec::new();
        while let Some(id) = todo.pop() {
            let pkg = packages[id];
            let deps = normal_deps(id);
            let services: Vec<&'static str> = SERVICES
                .iter()
                .filter(|(sdk, _)| deps.iter().any(|d| str_of(packages[d], "name") == *sdk))
                .map(|(_, prefix)| *prefix)
                .collect();
            let unknown_sdks = deps
                .iter()
                .map(|d| str_of(packages[d], "name"))
                .filter(|n| n.starts_with("aws-sdk-") && !SERVICES.iter().any(|(s, _)| s == n))
                .map(str::to_owned)
                .collect();
            for d in deps {
                if members.contains(d) && seen.insert(d) {
                    todo.push(d);
                }
            }
            let name = str_of(pkg, "name").to_owned();
            crates.push(LinkedCrate {
                files: linked_files(pkg, name == FUNCTION),
                name,
                services,
                unknown_sdks,
            });
        }
        crates.sort_by(|a, b| a.name.cmp(&b.name));
        Linked { ops, crates }
    })
}

/// The crate's source files that are linked: its library's, and for the function its binary.
/// Other targets' roots (binaries, tests, examples, benches) and `src/bin/` are left out.
fn linked_files(pkg: &Json, is_function: bool) -> Vec<PathBuf> {
    let dir = Path::new(str_of(pkg, "manifest_path"))
        .parent()
        .unwrap()
        .join("src");
    let mut roots_of_others = BTreeSet::new();
    for t in pkg["targets"].as_array().unwrap() {
        let kinds: Vec<&str> = t["kind"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let linked = kinds.iter().any(|k| k.ends_with("lib"))
            || (is_function && kinds.contains(&"bin") && str_of(t, "name") == FUNCTION);
        if !linked {
            roots_of_others.insert(PathBuf::from(str_of(t, "src_path")));
        }
    }
    let mut files = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if is_function || p != dir.join("bin") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") && !roots_of_others.contains(&p) {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Rust source with comments removed and, unless `keep_strings`, string and character literals
/// emptied; line breaks stay where they were, so line numbers still hold.
fn strip(src: &str, keep_strings: bool) -> String {
    let b: Vec<char> = src.chars().collect();
    let at = |i: usize| b.get(i).copied();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    // A literal's content b[from..to]: copied, or blanked but for its line breaks.
    let content = |out: &mut String, from: usize, to: usize| {
        for &c in b.get(from..to.min(b.len())).unwrap_or_default() {
            if keep_strings || c == '\n' {
                out.push(c);
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        let prev_ident = out
            .chars()
            .last()
            .is_some_and(|p| p.is_alphanumeric() || p == '_');
        if c == '/' && at(i + 1) == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            out.push(' ');
        } else if !prev_ident && (c == 'r' || (c == 'b' && at(i + 1) == Some('r'))) && {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            while at(j) == Some('#') {
                j += 1;
            }
            at(j) == Some('"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(i) == Some('#') {
                hashes += 1;
                i += 1;
            }
            let from = i + 1;
            let mut to = from;
            while to < b.len() && !(b[to] == '"' && (1..=hashes).all(|k| at(to + k) == Some('#'))) {
                to += 1;
            }
            out.push('"');
            content(&mut out, from, to);
            out.push('"');
            i = to + 1 + hashes;
        } else if c == '"' {
            let from = i + 1;
            let mut to = from;
            while to < b.len() && b[to] != '"' {
                to += if b[to] == '\\' { 2 } else { 1 };
            }
            out.push('"');
            content(&mut out, from, to);
            out.push('"');
            i = to + 1;
        } else if c == '\'' && (at(i + 1) == Some('\\') || at(i + 2) == Some('\'')) {
            // A character literal ('x', '\n', '\''), not a lifetime.
            let from = i + 1;
            let mut to = if at(i + 1) == Some('\\') {
                i + 3
            } else {
                i + 2
            };
            while to < b.len() && b[to] != '\'' {
                to += 1;
            }
            out.push('\'');
            content(&mut out, from, to);
            out.push('\'');
            i = to + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    blank_test_items(&out)
}

/// Blanks every item under `#[cfg(test)]` (a `mod tests { … }`, a test-only `fn` or `use`),
/// keeping line breaks. Braces inside literals are gone by now, or balanced in kept strings.
fn blank_test_items(code: &str) -> String {
    let mut b: Vec<char> = code.chars().collect();
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attr.len() <= b.len() {
        if b[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let mut j = i + attr.len();
        while j < b.len() && b[j] != '{' && b[j] != ';' {
            j += 1;
        }
        if j < b.len() && b[j] == '{' {
            let mut depth = 0;
            while j < b.len() {
                match b[j] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        let end = (j + 1).min(b.len());
        for c in &mut b[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end;
    }
    b.into_iter().collect()
}

/// The IAM actions one operation needs. `code` is the calling file (for the items of a
/// transaction).
fn iam_actions(prefix: &str, op: &str, code: &str) -> Result<Vec<String>, String> {
    let pascal: String = op
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let action = |a: &str| format!("{prefix}:{a}");
    Ok(match (prefix, op) {
        // No action of its own: each item is authorised as its item operation. The kinds of
        // item are read off the file's TransactWriteItem builders.
        ("dynamodb", "transact_write_items") => {
            let items = Regex::new(
                r"TransactWriteItem\s*::\s*builder\s*\(\s*\)\s*\.\s*(?:set_)?(put|update|delete|condition_check)\s*\(",
            )
            .unwrap();
            let found: BTreeSet<String> = items
                .captures_iter(code)
                .map(|c| match &c[1] {
                    "put" => action("PutItem"),
                    "update" => action("UpdateItem"),
                    "delete" => action("DeleteItem"),
                    _ => action("ConditionCheckItem"),
                })
                .collect();
            if found.is_empty() {
                return Err(
                    "transact_write_items, but no TransactWriteItem::builder().put/update/delete/condition_check( \
                     in the same file to tell which item actions it needs"
                        .into(),
                );
            }
            found.into_iter().collect()
        }
        ("dynamodb", "transact_get_items") => vec![action("GetItem")],
        // PartiQL is authorised per statement kind (PartiQLSelect, PartiQLInsert, …).
        ("dynamodb", "execute_statement" | "batch_execute_statement" | "execute_transaction") => {
            return Err(format!(
                "{op}: PartiQL needs dynamodb:PartiQL* actions; map them in iam_actions"
            ));
        }
        // A schedule names the role it invokes its target with: passing it needs iam:PassRole.
        ("scheduler", "create_schedule" | "update_schedule") => {
            vec![action(&pascal), "iam:PassRole".into()]
        }
        _ => vec![action(&pascal)],
    })
}

/// The actions of the calls in one file, called with the services `services`, each with the
/// places that need it.
fn actions_in(
    file: &str,
    src: &str,
    services: &[&str],
    ops: &BTreeMap<&'static str, BTreeSet<String>>,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let code = strip(src, false);
    let call = Regex::new(r"\.\s*([a-z][a-z0-9_]*)\s*\(\)").unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in call.captures_iter(&code) {
        let name = &m[1];
        let start = m.get(0).unwrap().start();
        let line = code[..start].matches('\n').count() + 1;
        for prefix in services {
            if ops[prefix].contains(name) {
                for a in
                    iam_actions(prefix, name, &code).map_err(|e| format!("{file}:{line}: {e}"))?
                {
                    out.entry(a)
                        .or_default()
                        .insert(format!("{file}:{line} .{name}()"));
                }
            }
        }
    }
    Ok(out)
}

/// Every action the function's code needs, with where each is called.
fn code_actions() -> BTreeMap<String, BTreeSet<String>> {
    let l = linked();
    let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    for c in &l.crates {
        if c.services.is_empty() {
            continue;
        }
        for f in &c.files {
            let name = rel(f);
            if NOT_RUN_BY_THE_FUNCTION.iter().any(|(p, _)| *p == name) {
                continue;
            }
            let src = std::fs::read_to_string(f).unwrap();
            match actions_in(&name, &src, &c.services, &l.ops) {
                Ok(found) => {
                    for (a, at) in found {
                        all.entry(a).or_default().extend(at);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    all
}

// ------------------------------------------------------------------------------------------
// The template side.

fn template_text() -> String {
    std::fs::read_to_string(root().join(TEMPLATE)).unwrap()
}

fn template() -> Yaml {
    serde_norway::from_str(&template_text()).unwrap()
}

/// The function and the value of a short-form tag (`!Ref X` is `("Ref", X)`), or of its long
/// form (`{Ref: X}`, `{Fn::GetAtt: …}`); `("", v)` for anything else.
fn untag(v: &Yaml) -> (String, &Yaml) {
    match v {
        Yaml::Tagged(t) => (
            t.tag.to_string().trim_start_matches('!').to_owned(),
            &t.value,
        ),
        Yaml::Mapping(m) if m.len() == 1 => {
            let (k, val) = m.iter().next().unwrap();
            match k.as_str() {
                Some("Ref") => ("Ref".into(), val),
                Some(f) if f.starts_with("Fn::") => (f.trim_start_matches("Fn::").into(), val),
                _ => (String::new(), v),
            }
        }
        _ => (String::new(), v),
    }
}

fn resources(t: &Yaml) -> Vec<(String, &Yaml)> {
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v))
        .collect()
}

fn of_type<'a>(t: &'a Yaml, ty: &str) -> Vec<(String, &'a Yaml)> {
    resources(t)
        .into_iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .collect()
}

/// The function resource (there is one).
fn function(t: &Yaml) -> &Yaml {
    let f = of_type(t, "AWS::Lambda::Function");
    assert_eq!(f.len(), 1, "one AWS::Lambda::Function in {TEMPLATE}");
    f[0].1
}

/// The logical id of the function's role (`Role: !GetAtt X.Arn`).
fn function_role(t: &Yaml) -> Result<String, String> {
    let role = &function(t)["Properties"]["Role"];
    let (tag, value) = untag(role);
    match (tag.as_str(), value) {
        ("GetAtt", Yaml::String(s)) => s
            .strip_suffix(".Arn")
            .map(str::to_owned)
            .ok_or_else(|| format!("the function's Role is !GetAtt {s}, not an ARN")),
        ("GetAtt", Yaml::Sequence(s)) if s.len() == 2 && s[1].as_str() == Some("Arn") => {
            Ok(s[0].as_str().unwrap_or_default().to_owned())
        }
        _ => Err(format!(
            "the function's Role is not !GetAtt <role>.Arn of a role in the template: {role:?}"
        )),
    }
}

/// Whether `v` is `!Ref id`.
fn is_ref(v: &Yaml, id: &str) -> bool {
    let (tag, value) = untag(v);
    tag == "Ref" && value.as_str() == Some(id)
}

/// Every action the function's role allows, but the log group's (`logs:`: the runtime writes
/// the log, the code prints to stdout). Refuses what this comparison could not read exactly:
/// managed policies, Deny or NotAction statements, wildcards.
fn role_actions(t: &Yaml) -> Result<BTreeSet<String>, String> {
    let id = function_role(t)?;
    let role = resources(t)
        .into_iter()
        .find(|(k, _)| *k == id)
        .map(|(_, r)| r)
        .ok_or_else(|| format!("no resource {id}"))?;
    if role["Type"].as_str() != Some("AWS::IAM::Role") {
        return Err(format!("{id} is not an AWS::IAM::Role"));
    }
    if !role["Properties"]["ManagedPolicyArns"].is_null() {
        return Err(format!(
            "{id} has ManagedPolicyArns: their actions cannot be checked here; write them inline"
        ));
    }
    let mut documents: Vec<(String, &Yaml)> = Vec::new();
    if let Some(ps) = role["Properties"]["Policies"].as_sequence() {
        for p in ps {
            let name = p["PolicyName"].as_str().unwrap_or("?");
            documents.push((format!("{id}/{name}"), &p["PolicyDocument"]));
        }
    }
    // Policies attached to the role from outside it.
    for ty in [
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::IAM::RolePolicy",
    ] {
        for (k, r) in of_type(t, ty) {
            let p = &r["Properties"];
            let attached = p["Roles"]
                .as_sequence()
                .is_some_and(|rs| rs.iter().any(|r| is_ref(r, &id)))
                || is_ref(&p["RoleName"], &id);
            if attached {
                documents.push((k, &p["PolicyDocument"]));
            }
        }
    }
    let mut out = BTreeSet::new();
    for (name, doc) in documents {
        let statements: Vec<&Yaml> = match &doc["Statement"] {
            Yaml::Sequence(s) => s.iter().collect(),
            s @ Yaml::Mapping(_) => vec![s],
            other => return Err(format!("{name}: Statement is {other:?}")),
        };
        for s in statements {
            if s["Effect"].as_str() != Some("Allow") || !s["NotAction"].is_null() {
                return Err(format!(
                    "{name}: only Allow statements with Action are compared; found {s:?}"
                ));
            }
            let actions: Vec<&Yaml> = match &s["Action"] {
                Yaml::Sequence(a) => a.iter().collect(),
                a => vec![a],
            };
            for a in actions {
                let a = a
                    .as_str()
                    .ok_or_else(|| format!("{name}: an action is not a string: {a:?}"))?;
                if a.contains('*') {
                    return Err(format!("{name}: {a} is a wildcard; name each action"));
                }
                if !a.starts_with("logs:") {
                    out.insert(a.to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// Both sets the same, or what to change on which side.
fn compare(
    code: &BTreeMap<String, BTreeSet<String>>,
    role: &BTreeSet<String>,
) -> Result<(), String> {
    let missing: Vec<String> = code
        .iter()
        .filter(|(a, _)| !role.contains(*a))
        .map(|(a, at)| {
            let at: Vec<&str> = at.iter().map(String::as_str).collect();
            format!("    {a}    ({})", at.join(", "))
        })
        .collect();
    let unused: Vec<String> = role
        .iter()
        .filter(|a| !code.contains_key(*a))
        .map(|a| format!("    {a}"))
        .collect();
    if missing.is_empty() && unused.is_empty() {
        return Ok(());
    }
    let mut msg = format!("the function's role in {TEMPLATE} and the code it runs disagree\n");
    if !missing.is_empty() {
        msg += &format!(
            "  called by the code, not allowed by the role (add to the role, or remove the call):\n{}\n",
            missing.join("\n")
        );
    }
    if !unused.is_empty() {
        msg += &format!(
            "  allowed by the role, called by no code the function runs (remove from the role):\n{}\n",
            unused.join("\n")
        );
    }
    Err(msg)
}

// ------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_function_role_allows_exactly_the_operations_the_code_calls() {
    let code = code_actions();
    let role = role_actions(&template()).unwrap();
    println!("the function's code calls:");
    for (a, at) in &code {
        println!("  {a}");
        for w in at {
            println!("      {w}");
        }
    }
    println!("the function's role allows: {role:?}");
    if let Err(e) = compare(&code, &role) {
        panic!("{e}");
    }
}

#[test]
fn the_scan_covers_the_crates_the_function_links_and_nothing_else() {
    let l = linked();
    let names: BTreeMap<&str, &[&str]> = l
        .crates
        .iter()
        .map(|c| (c.name.as_str(), c.services.as_slice()))
        .collect();
    println!("linked crates and their AWS services: {names:?}");
    // The AWS call sites the function links.
    assert_eq!(names.get("jit-store"), Some(&&["dynamodb"][..]));
    assert_eq!(
        names.get("jit-grants"),
        Some(&&["sso", "identitystore"][..])
    );
    assert_eq!(names.get("jit-keys"), Some(&&["secretsmanager"][..]));
    assert_eq!(names.get(FUNCTION), Some(&&["scheduler"][..]));
    // The CLI writes secrets (`jit keys rotate`: PutSecretValue) and reads the old tables
    // (`jit import`: Scan, DescribeTable) with the operator's credentials: not the function's.
    assert!(!names.contains_key("jit-cli"), "the function links jit-cli");
    // A new AWS service is a new IAM prefix: name it in SERVICES, or its calls go unseen.
    for c in &l.crates {
        assert!(
            c.unknown_sdks.is_empty(),
            "{} depends on {:?}: add it to SERVICES with its IAM prefix",
            c.name,
            c.unknown_sdks
        );
    }
    let function = l.crates.iter().find(|c| c.name == FUNCTION).unwrap();
    let files: Vec<String> = function.files.iter().map(|f| rel(f)).collect();
    assert!(files.contains(&"crates/jit-lambda/src/main.rs".to_owned()));
    assert!(!files.iter().any(|f| f.contains("/tests/")));

    // The file left out holds create_tables, and nothing the function runs calls it.
    for (path, why) in NOT_RUN_BY_THE_FUNCTION {
        let src = std::fs::read_to_string(root().join(path))
            .unwrap_or_else(|e| panic!("{path} ({why}): {e}"));
        assert!(strip(&src, false).contains("create_table()"), "{path}");
    }
    let uses = Regex::new(r"\bcreate_tables\b").unwrap();
    for c in &l.crates {
        for f in &c.files {
            let name = rel(f);
            if NOT_RUN_BY_THE_FUNCTION.iter().any(|(p, _)| *p == name) {
                continue;
            }
            let code = strip(&std::fs::read_to_string(f).unwrap(), false);
            assert!(
                !uses.is_match(&code),
                "{name} calls create_tables, which the function's role does not allow \
                 (CreateTable, UpdateTimeToLive)"
            );
        }
    }
}

#[test]
fn a_missing_or_an_unused_permission_fails_the_comparison() {
    let ops = &linked().ops;
    let code = code_actions();
    let text = template_text();

    // A permission no code uses.
    let widened = text.replacen(
        "                  - dynamodb:Query\n",
        "                  - dynamodb:Query\n                  - dynamodb:Scan\n",
        1,
    );
    assert_ne!(widened, text, "the template lists dynamodb:Query");
    let role = role_actions(&serde_norway::from_str(&widened).unwrap()).unwrap();
    let e = compare(&code, &role).unwrap_err();
    assert!(
        e.contains("allowed by the role, called by no code") && e.contains("dynamodb:Scan"),
        "{e}"
    );

    // A call without its permission, next to calls the scan must not count.
    let src = std::fs::read_to_string(root().join("crates/jit-store/src/dynamo/mod.rs")).unwrap()
        + r##"
async fn everything(c: &Client) {
    // c.describe_table() in a comment
    /* c.list_tables() in /* a nested */ block comment */
    let _ = "c.describe_limits() in a string";
    let _ = r#"c.list_backups() in a "raw" string"#;
    let _ = ('.', '"', '\'', "x");
    c.scan().table_name("t").send().await;
}
#[cfg(test)]
mod more_tests {
    async fn t(c: &Client) { c.delete_table().send().await; }
}
"##;
    let mut widened_code = code.clone();
    for (a, at) in actions_in("doctored.rs", &src, &["dynamodb"], ops).unwrap() {
        widened_code.entry(a).or_default().extend(at);
    }
    for not in [
        "DescribeTable",
        "ListTables",
        "DescribeLimits",
        "ListBackups",
        "DeleteTable",
    ] {
        assert!(
            !widened_code.contains_key(&format!("dynamodb:{not}")),
            "{not} is not a call"
        );
    }
    let role = role_actions(&template()).unwrap();
    let e = compare(&widened_code, &role).unwrap_err();
    assert!(
        e.contains("called by the code, not allowed by the role")
            && e.contains("dynamodb:Scan")
            && e.contains("doctored.rs:"),
        "{e}"
    );
    assert!(!e.contains("allowed by the role, called by no code"), "{e}");

    // Transactions need their items' actions; a schedule needs to pass its role.
    let tx = "fn f(c: &Client) { c.transact_write_items(); \
              TransactWriteItem::builder().condition_check(x).build(); }";
    let a = actions_in("tx.rs", tx, &["dynamodb"], ops).unwrap();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        ["dynamodb:ConditionCheckItem"]
    );
    let s = actions_in(
        "s.rs",
        "fn f(c: &Client) { c.create_schedule(); }",
        &["scheduler"],
        ops,
    )
    .unwrap();
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        ["iam:PassRole", "scheduler:CreateSchedule"]
    );
    // A transaction whose items cannot be told is refused, not guessed.
    assert!(actions_in("t.rs", "c.transact_write_items()", &["dynamodb"], ops).is_err());

    // A role this comparison cannot read exactly is refused.
    let managed = text.replacen(
        "      AssumeRolePolicyDocument:\n        Version: \"2012-10-17\"\n        Statement:\n          - Effect: Allow\n            Principal: {Service: lambda.amazonaws.com}",
        "      ManagedPolicyArns: [arn:aws:iam::aws:policy/AdministratorAccess]\n      AssumeRolePolicyDocument:\n        Version: \"2012-10-17\"\n        Statement:\n          - Effect: Allow\n            Principal: {Service: lambda.amazonaws.com}",
        1,
    );
    assert_ne!(managed, text);
    assert!(role_actions(&serde_norway::from_str(&managed).unwrap()).is_err());
    let wildcard = text.replacen("- dynamodb:Query\n", "- dynamodb:*\n", 1);
    assert!(role_actions(&serde_norway::from_str(&wildcard).unwrap()).is_err());
}

fn env_vars(t: &Yaml) -> BTreeMap<String, Yaml> {
    function(t)["Properties"]["Environment"]["Variables"]
        .as_mapping()
        .expect("the function's Environment.Variables")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

#[test]
fn the_function_environment_names_only_variables_the_code_reads() {
    let read: BTreeSet<String> = [
        "crates/jit-server/src/config.rs",
        "crates/jit-lambda/src/main.rs",
    ]
    .iter()
    .flat_map(|f| {
        let code = strip(&std::fs::read_to_string(root().join(f)).unwrap(), true);
        Regex::new(r#""(JIT_[A-Z0-9_]+)""#)
            .unwrap()
            .captures_iter(&code)
            .map(|c| c[1].to_owned())
            .collect::<Vec<_>>()
    })
    .collect();
    let t = template();
    let env = env_vars(&t);
    let unread: Vec<&String> = env.keys().filter(|k| !read.contains(*k)).collect();
    assert!(
        unread.is_empty(),
        "{TEMPLATE} sets variables no code reads: {unread:?}"
    );
    // The function refuses one of the pair without the other.
    assert_eq!(
        env.contains_key("JIT_SCHEDULER_GROUP"),
        env.contains_key("JIT_SCHEDULER_ROLE_ARN")
    );
    // dynamodb://STATE_TABLE?nonces=NONCES_TABLE, both tables of the stack.
    let tables: Vec<String> = of_type(&t, "AWS::DynamoDB::Table")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let url = match untag(&env["JIT_DATABASE_URL"]) {
        (tag, Yaml::String(s)) if tag == "Sub" => s.clone(),
        other => panic!("JIT_DATABASE_URL is not a !Sub string: {other:?}"),
    };
    let shape = Regex::new(r"^dynamodb://\$\{(\w+)\}\?nonces=\$\{(\w+)\}$").unwrap();
    let c = shape.captures(&url).unwrap_or_else(|| {
        panic!("JIT_DATABASE_URL {url:?} is not dynamodb://STATE?nonces=NONCES")
    });
    assert!(tables.contains(&c[1].to_owned()) && tables.contains(&c[2].to_owned()) && c[1] != c[2]);
    assert_eq!(env["JIT_NONCE_STORE"].as_str(), Some("database"));
}

#[test]
fn the_alarms_read_metrics_the_function_writes() {
    let emf = strip(
        &std::fs::read_to_string(root().join("crates/jit-lambda/src/emf.rs")).unwrap(),
        true,
    );
    let written: BTreeSet<String> = Regex::new(r#""(jit_[a-z_]+)""#)
        .unwrap()
        .captures_iter(&emf)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(written.contains("jit_revocations_overdue"), "{written:?}");
    let t = template();
    let namespace = env_vars(&t)["JIT_METRICS_NAMESPACE"]
        .as_str()
        .expect("JIT_METRICS_NAMESPACE as a plain string")
        .to_owned();
    let mut ours = 0;
    for (id, alarm) in of_type(&t, "AWS::CloudWatch::Alarm") {
        let p = &alarm["Properties"];
        let ns = p["Namespace"].as_str().unwrap_or_default();
        if ns.starts_with("AWS/") {
            continue;
        }
        ours += 1;
        assert_eq!(ns, namespace, "{id}: the function writes into {namespace}");
        let name = p["MetricName"].as_str().unwrap_or_default();
        assert!(
            written.contains(name),
            "{id}: the function writes no metric {name:?} (crates/jit-lambda/src/emf.rs writes {written:?})"
        );
        assert!(
            p["Dimensions"].is_null(),
            "{id}: the function's metrics have no dimensions"
        );
    }
    assert!(ours > 0);
}

#[test]
fn the_state_table_has_every_index_the_store_queries() {
    let store = strip(
        &std::fs::read_to_string(root().join("crates/jit-store/src/dynamo/mod.rs")).unwrap(),
        true,
    );
    let used: BTreeSet<u32> = Regex::new(r#""g([0-9]+)(?:pk|sk)?""#)
        .unwrap()
        .captures_iter(&store)
        .map(|c| c[1].parse().unwrap())
        .collect();
    assert_eq!(used, (1..=6).collect(), "the store's indexes");
    let t = template();
    let state = of_type(&t, "AWS::DynamoDB::Table")
        .into_iter()
        .find(|(_, r)| !r["Properties"]["GlobalSecondaryIndexes"].is_null())
        .expect("a table with indexes")
        .1;
    let p = &state["Properties"];
    let attrs: BTreeMap<String, String> = p["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap().to_owned(),
                a["AttributeType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut in_template = BTreeSet::new();
    for g in p["GlobalSecondaryIndexes"].as_sequence().unwrap() {
        let name = g["IndexName"].as_str().unwrap();
        let n: u32 = name
            .strip_prefix("gsi")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("index {name} is not gsiN"));
        let keys: Vec<(&str, &str)> = g["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap(),
                    k["KeyType"].as_str().unwrap(),
                )
            })
            .collect();
        let (pk, sk) = (format!("g{n}pk"), format!("g{n}sk"));
        assert_eq!(
            keys,
            [(pk.as_str(), "HASH"), (sk.as_str(), "RANGE")],
            "{name}"
        );
        assert_eq!(
            g["Projection"]["ProjectionType"].as_str(),
            Some("ALL"),
            "{name}"
        );
        for k in [&pk, &sk] {
            assert_eq!(attrs.get(k).map(String::as_str), Some("S"), "{k}");
        }
        in_template.insert(n);
    }
    assert_eq!(
        in_template, used,
        "gsiN in {TEMPLATE} against gN in the store"
    );
}
