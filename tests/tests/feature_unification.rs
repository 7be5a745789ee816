//! Every build command of the README and xtask resolves the same features, so a second command
//! compiles nothing: `cargo build -p cdnet-edge` alone, `-p cdnet-host` alone and `-p xtask` alone
//! must give each third-party crate they share the features the combined build gives it, in the
//! target context and in the host context (build scripts, proc-macros) separately.
//! `workspace-hack/` is what makes this true; when a dependency change breaks it, the failure
//! prints the lines to put there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Where a crate is compiled for: the program, or the build (build scripts and proc-macros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Context {
    Target,
    Host,
}

/// (context, "name vX.Y.Z") → features, for the third-party crates of one build command.
type Features = BTreeMap<(Context, String), BTreeSet<String>>;

/// Reads `cargo tree -e normal,build -f '{p}|{f}' --charset ascii` output (deduplicated or not).
fn parse_tree(text: &str) -> Features {
    let mut features = Features::new();
    // Per depth: the context of the crate on that line, and whether its children listed next are
    // under a `[build-dependencies]` header.
    let mut context: Vec<Context> = Vec::new();
    let mut in_build: Vec<bool> = Vec::new();
    for line in text.lines() {
        let body = line.trim_start_matches([' ', '|', '`', '-']);
        let depth = (line.len() - body.len()) / 4;
        if body.is_empty() {
            continue;
        }
        if let Some(header) = body.strip_prefix('[') {
            in_build.truncate(depth + 1);
            if let Some(flag) = in_build.get_mut(depth) {
                *flag = header.starts_with("build-dependencies");
            }
            continue;
        }
        let body = body.strip_suffix(" (*)").unwrap_or(body);
        let Some((package, list)) = body.split_once('|') else { continue };
        let from_parent = depth
            .checked_sub(1)
            .map(|parent| context.get(parent) == Some(&Context::Host) || in_build.get(parent) == Some(&true));
        let here =
            if from_parent == Some(true) || package.contains("(proc-macro)") { Context::Host } else { Context::Target };
        context.truncate(depth);
        in_build.truncate(depth);
        context.push(here);
        in_build.push(false);
        if package.contains(" (/") {
            continue; // a workspace crate
        }
        let name = package.split(" (").next().unwrap_or(package).trim().to_string();
        features.entry((here, name)).or_default().extend(list.split(',').filter(|f| !f.is_empty()).map(String::from));
    }
    features
}

fn resolve(packages: &[&str]) -> Features {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["tree", "--offline", "-e", "normal,build", "-f", "{p}|{f}", "--charset", "ascii"]);
    command.args(["--target", "x86_64-unknown-linux-gnu"]);
    for package in packages {
        command.args(["-p", package]);
    }
    let output = command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).output().unwrap();
    assert!(output.status.success(), "cargo tree: {}", String::from_utf8_lossy(&output.stderr));
    parse_tree(&String::from_utf8(output.stdout).unwrap())
}

/// The crates whose features in `alone` differ from `together`, as workspace-hack lines.
fn differences(alone: &Features, together: &Features) -> Vec<String> {
    let mut lines = Vec::new();
    for (key @ (context, name), features) in alone {
        let Some(all) = together.get(key) else { continue };
        if features != all {
            let section = if *context == Context::Host { "build-dependencies" } else { "dependencies" };
            let (crate_name, version) = name.split_once(" v").unwrap_or((name, "?"));
            let list: Vec<String> = all.iter().filter(|f| *f != "default").map(|f| format!("{f:?}")).collect();
            lines.push(format!(
                "[{section}] {crate_name} = {{ version = \"{version}\", default-features = {}, features = [{}] }}",
                all.contains("default"),
                list.join(", ")
            ));
        }
    }
    lines
}

#[test]
fn every_build_command_resolves_the_features_of_the_combined_build() {
    let together = resolve(&["cdnet-edge", "cdnet-host", "xtask"]);
    assert!(together.len() > 300, "cargo tree gave {} crates: the parser lost them", together.len());
    let mut stale = Vec::new();
    for command in ["cdnet-edge", "cdnet-host", "xtask"] {
        for line in differences(&resolve(&[command]), &together) {
            stale.push(format!("-p {command}: {line}"));
        }
    }
    assert!(
        stale.is_empty(),
        "a build command alone resolves other features than the combined build, so it would \
         recompile those crates and everything above them (tract, burn). Put these in \
         workspace-hack/Cargo.toml (x86_64 section):\n{}",
        stale.join("\n")
    );
}

/// The check can fail: a crate with fewer features alone, in either context, is reported.
#[test]
fn the_check_notices_a_feature_difference_in_either_context() {
    let together = "\
app v0.1.0 (/w/app)|
|-- either v1.0.0|default,use_std
`-- derive v1.0.0 (proc-macro)|
    `-- either v1.0.0|use_std
[build-dependencies]
`-- cc v1.0.0|parallel
";
    let alone = "\
app v0.1.0 (/w/app)|
|-- either v1.0.0|use_std
`-- derive v1.0.0 (proc-macro)|
    `-- either v1.0.0|use_std
[build-dependencies]
`-- cc v1.0.0|
";
    let (together, alone) = (parse_tree(together), parse_tree(alone));
    assert_eq!(together[&(Context::Host, "either v1.0.0".into())], BTreeSet::from(["use_std".to_string()]));
    assert!(together.contains_key(&(Context::Host, "cc v1.0.0".into())), "{together:?}");
    let lines = differences(&alone, &together);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("[dependencies] either") && lines[0].contains("default-features = true"));
    assert!(lines[1].starts_with("[build-dependencies] cc") && lines[1].contains("\"parallel\""));
    assert!(differences(&together, &together).is_empty());
}
