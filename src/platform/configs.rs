//! Whether `make run` runs what an operator installs: the configs `scripts/render-configs.sh`
//! wrote under `<run>/etc` against the shipped ones in `vassals-examples/` (the ini files and
//! the customer sshd's `sshd_config`), undoing the value mappings `scripts/local-overrides`
//! declares. The table is read here on its own, not through
//! the renderer, so a renderer that changes more than the table says is caught.

use std::path::Path;

/// One value mapping of the table, its variables filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The ini option whose value is mapped, or `*`.
    pub option: String,
    pub production: String,
    pub local: String,
}

/// A file only `make run` has, under `<run>/etc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Relative to `<run>/etc`.
    pub path: String,
    /// The shipped file (relative to `vassals-examples/`) it replaces under `make run`.
    pub stands_in_for: Option<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub maps: Vec<Mapping>,
    pub local_files: Vec<LocalFile>,
}

/// Options whose values are names rather than paths or addresses.
const NAME_OPTIONS: [&str; 3] = ["plugins", "unbit-cgroup-name", "unbit-network-table"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `host:port` with a dotted IPv4 host, or `:port`.
fn is_address(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host_ok = host.is_empty()
        || (host.split('.').count() == 4
            && host.split('.').all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit())));
    host_ok && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
}

/// The value of the first `option = value` line of a rendered ini file (what a test reads its
/// addresses and paths from); panics naming the option when there is none.
pub fn option(ini: &str, option: &str) -> String {
    let prefix = format!("{option} = ");
    let value = ini.lines().find_map(|l| l.strip_prefix(&prefix));
    value.unwrap_or_else(|| panic!("the rendered config has no {option}")).trim().to_string()
}

/// The port of a socket option's value: `127.0.0.1:8443` or `127.0.0.1:8443,<cert>,<key>,...`.
pub fn port(value: &str) -> u16 {
    let address = value.split(',').next().unwrap_or_default();
    address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {value:?}"))
}

/// Parses `scripts/local-overrides`; `vars` fills in `$RUN`, `$ROOT`, the ports and the cgroup
/// name. Also refuses a mapping of anything but a path, an address or a name option: only those
/// may differ between a node and `make run`.
pub fn read_overrides(table: &str, vars: &[(&str, String)]) -> Result<Overrides, String> {
    let mut out = Overrides::default();
    for (i, line) in table.lines().enumerate() {
        let at = |what: String| format!("scripts/local-overrides line {}: {what}", i + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [first, ..] if first.starts_with('#') => {}
            ["local", path, stands_in_for, _why, ..] => out.local_files.push(LocalFile {
                path: path.to_string(),
                stands_in_for: (*stands_in_for != "-").then(|| stands_in_for.to_string()),
            }),
            ["local", ..] => return Err(at("expected: local PATH STANDS-IN-FOR WHY".into())),
            [option, production, local] => {
                let mut value = local.to_string();
                // `$RUNTIME` before `$RUN`: the longer name first.
                let mut vars = vars.to_vec();
                vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
                for (name, v) in &vars {
                    value = value.replace(&format!("${name}"), v);
                }
                if value.contains('$') {
                    return Err(at(format!("unknown variable in {local}")));
                }
                let legit = if *option == "*" {
                    production.starts_with('/') || is_address(production) || url_host(production).is_some()
                } else {
                    NAME_OPTIONS.contains(option) && production.chars().all(is_name_char)
                };
                if !legit {
                    return Err(at(format!(
                        "maps `{option}` value `{production}`: only paths, addresses and the names of {} may \
                         differ between a node and make run",
                        NAME_OPTIONS.join(", ")
                    )));
                }
                if let Some(other) = out.maps.iter().find(|m| m.local == value) {
                    return Err(at(format!("{value} is already the local value of {}", other.production)));
                }
                out.maps.push(Mapping { option: option.to_string(), production: production.to_string(), local: value });
            }
            _ => return Err(at("expected: OPTION PRODUCTION LOCAL".into())),
        }
    }
    Ok(out)
}

/// How a shipped config writes its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `option = value` (uWSGI's ini files)
    Ini,
    /// `Keyword value` (sshd_config)
    Sshd,
}

/// Where `render-configs.sh` writes a shipped file (relative to `vassals-examples/`), relative
/// to `<run>/etc`, and its syntax; `None` for a file it does not render.
pub fn rendered_path(shipped: &str) -> Option<(String, Syntax)> {
    if shipped.ends_with(".ini") {
        Some((format!("uwsgi/{shipped}"), Syntax::Ini))
    } else if shipped == "sshd_config" {
        Some(("unbit/sshd_config".into(), Syntax::Sshd))
    } else {
        None
    }
}

/// `(option, value)` of an option line (not a comment, section or blank line).
fn option_line(line: &str, syntax: Syntax) -> Option<(&str, &str)> {
    let t = line.trim_start();
    if t.starts_with([';', '#', '[']) {
        return None;
    }
    let (key, value) = match syntax {
        Syntax::Ini => t.split_once('=')?,
        Syntax::Sshd => t.split_once(char::is_whitespace)?,
    };
    let key = key.trim();
    (!key.is_empty() && key.chars().all(is_name_char)).then_some((key, value))
}

/// The rendered value with every local value of `maps` put back to its production value, by
/// the table's rule: a whole word or a path prefix, the longest first.
pub fn unmap(value: &str, maps: &[&Mapping]) -> String {
    let mut maps = maps.to_vec();
    maps.sort_by_key(|m| std::cmp::Reverse(m.local.len()));
    let mut out = String::new();
    let mut rest = value;
    let mut prev: Option<char> = None;
    'scan: while let Some(c) = rest.chars().next() {
        if !prev.is_some_and(is_name_char) {
            for m in &maps {
                if let Some(after) = rest.strip_prefix(m.local.as_str()) {
                    if !after.chars().next().is_some_and(is_name_char) {
                        out.push_str(&m.production);
                        prev = m.local.chars().last();
                        rest = after;
                        continue 'scan;
                    }
                }
            }
        }
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `host[:port]` of an `http://` or `https://` URL (a service's base URL, which the table may
/// map like an address), with a host of name characters only.
fn url_host(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    let ok = !name.is_empty() && name.chars().all(is_name_char) && port.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(host)
}

/// Absolute paths and addresses in a rendered option value.
fn paths_and_addresses(value: &str) -> (Vec<String>, Vec<String>) {
    let (mut paths, mut addresses) = (Vec::new(), Vec::new());
    for token in value.split(|c: char| c.is_whitespace() || c == ',' || c == '=') {
        // `unbit:///dir` names a path, `http://host:port/...` an address.
        let (token, url) = match token.split_once("://") {
            Some((_, rest)) => (rest, true),
            None => (token, false),
        };
        let path = if token.starts_with('/') {
            Some(format!("/{}", token.trim_start_matches('/')))
        } else if url {
            None
        } else {
            // `mkdir:/dir` (a hook's argument)
            token.split_once(":/").map(|(_, p)| format!("/{}", p.trim_start_matches('/')))
        };
        match path {
            Some(p) => paths.push(p),
            None => {
                let host = token.split('/').next().unwrap_or_default();
                if is_address(host) {
                    addresses.push(host.to_string());
                }
            }
        }
    }
    (paths, addresses)
}

/// Every file below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap_or(&path).to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn inside(path: &str, dirs: &[&Path]) -> bool {
    dirs.iter().any(|d| Path::new(path).starts_with(d))
}

/// Everything by which `<run>/etc` differs from `<root>/vassals-examples` beyond what the table
/// declares; empty when `make run` runs the shipped configs.
pub fn divergence(root: &Path, run: &Path, vars: &[(&str, String)]) -> Vec<String> {
    let table = match std::fs::read_to_string(root.join("scripts/local-overrides")) {
        Ok(t) => t,
        Err(e) => return vec![format!("scripts/local-overrides: {e}")],
    };
    let overrides = match read_overrides(&table, vars) {
        Ok(o) => o,
        Err(e) => return vec![e],
    };
    let (shipped_dir, etc) = (root.join("vassals-examples"), run.join("etc"));
    let mut found = Vec::new();
    let mut expected: Vec<String> = overrides.local_files.iter().map(|l| l.path.clone()).collect();
    for shipped in files_below(&shipped_dir) {
        let Some((rel, syntax)) = rendered_path(&shipped) else {
            if !overrides.local_files.iter().any(|l| l.stands_in_for.as_deref() == Some(shipped.as_str())) {
                found.push(format!(
                    "vassals-examples/{shipped} is neither rendered (an .ini or sshd_config) nor stood in for by a \
                     local file"
                ));
            }
            continue;
        };
        expected.push(rel.clone());
        let Ok(rendered) = std::fs::read_to_string(etc.join(&rel)) else {
            found.push(format!("vassals-examples/{shipped} has no rendered copy etc/{rel}"));
            continue;
        };
        let original = std::fs::read_to_string(shipped_dir.join(&shipped)).unwrap_or_default();
        found.extend(compare(&rel, syntax, &original, &rendered, &overrides.maps, root, run));
    }
    for local in &overrides.local_files {
        if !etc.join(&local.path).is_file() {
            found.push(format!("the declared local file etc/{} was not written", local.path));
        }
    }
    for extra in files_below(&etc).into_iter().filter(|f| !expected.contains(f)) {
        found.push(format!(
            "etc/{extra} is neither a shipped config nor a local file declared in scripts/local-overrides"
        ));
    }
    found
}

/// One rendered file against its shipped original.
fn compare(
    rel: &str,
    syntax: Syntax,
    shipped: &str,
    rendered: &str,
    maps: &[Mapping],
    root: &Path,
    run: &Path,
) -> Vec<String> {
    let mut found = Vec::new();
    let (shipped, rendered): (Vec<&str>, Vec<&str>) = (shipped.lines().collect(), rendered.lines().collect());
    if shipped.len() != rendered.len() {
        found.push(format!("etc/{rel} has {} lines, its shipped file {}", rendered.len(), shipped.len()));
    }
    let locals: Vec<&str> = maps.iter().map(|m| m.local.as_str()).collect();
    // Outside the run dir and the repository only what the table declares as a local value.
    let mut allowed: Vec<&Path> = vec![run, root];
    allowed.extend(locals.iter().filter(|l| l.starts_with('/')).map(Path::new));
    for (n, (s, r)) in shipped.iter().zip(&rendered).enumerate() {
        let Some((option, value)) = option_line(r, syntax) else {
            if s != r {
                found.push(format!("etc/{rel} line {}: `{r}`, shipped `{s}`", n + 1));
            }
            continue;
        };
        let applicable: Vec<&Mapping> = maps.iter().filter(|m| m.option == "*" || m.option == option).collect();
        let head = &r[..r.len() - value.len()];
        let back = format!("{head}{}", unmap(value, &applicable));
        if back != *s {
            found.push(format!("etc/{rel} line {}: `{r}` maps back to `{back}`, shipped `{s}`", n + 1));
        }
        let (paths, addresses) = paths_and_addresses(value);
        for p in paths.iter().filter(|p| !inside(p, &allowed)) {
            found.push(format!(
                "etc/{rel} line {}: {p} is outside the run dir: a production path with no local value in \
                 scripts/local-overrides",
                n + 1
            ));
        }
        // A local base URL (`http://127.0.0.1:PORT/prefix`) declares its address too.
        let declared = |a: &str| locals.iter().any(|l| *l == a || url_host(l) == Some(a));
        for a in addresses.iter().filter(|a| !declared(a)) {
            found.push(format!(
                "etc/{rel} line {}: {a} is a production address with no local value in scripts/local-overrides",
                n + 1
            ));
        }
        if option == "plugins" {
            for plugin in value.split(',').map(str::trim).filter(|p| !p.contains('/')) {
                if root.join("plugins").join(plugin).is_dir() {
                    found.push(format!(
                        "etc/{rel} line {}: the platform's plugin {plugin} would load from uWSGI's plugin dir, \
                         where make run does not install it: map it in scripts/local-overrides",
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(option: &str, production: &str, local: &str) -> Mapping {
        Mapping { option: option.into(), production: production.into(), local: local.into() }
    }

    #[test]
    fn unmap_puts_back_whole_words_and_path_prefixes_longest_first() {
        let maps = [
            map("*", "/var/log/uwsgi", "/r/log"),
            map("*", "/var/log/uwsgi/http.log", "/r/log/router.log"),
            map("*", "/containers", "/r/containers"),
            map("*", "/var/lib/unbit/specs", "/r/specs"),
        ];
        let maps: Vec<&Mapping> = maps.iter().collect();
        assert_eq!(unmap(" /r/log/router.log", &maps), " /var/log/uwsgi/http.log");
        assert_eq!(unmap(" /r/log/x.log", &maps), " /var/log/uwsgi/x.log");
        assert_eq!(unmap("unbit:///r/specs", &maps), "unbit:///var/lib/unbit/specs");
        assert_eq!(
            unmap("cmd=/bin/x --dir /r/containers/1,/r/containers", &maps),
            "cmd=/bin/x --dir /containers/1,/containers"
        );
        // not at a word boundary: left alone
        assert_eq!(
            unmap("/x/r/containers /r/containers2 /r/specs.old", &maps),
            "/x/r/containers /r/containers2 /r/specs.old"
        );
    }

    #[test]
    fn the_table_maps_only_paths_addresses_and_names() {
        let vars = [("RUN", "/r".to_string()), ("ROUTER_PORT", "8000".to_string())];
        let ok = "# c\n*  /containers  $RUN/containers\n*  0.0.0.0:80  127.0.0.1:$ROUTER_PORT\nplugins  unbit_x  /b/unbit_x\n*  https://hooks.example.com  http://127.0.0.1:$ROUTER_PORT/x\n\nlocal  a/b.ini  -  why not\n";
        let o = read_overrides(ok, &vars).unwrap();
        assert_eq!(o.maps[0], map("*", "/containers", "/r/containers"));
        assert_eq!(o.maps[1].local, "127.0.0.1:8000");
        assert_eq!(o.maps[3], map("*", "https://hooks.example.com", "http://127.0.0.1:8000/x"));
        assert_eq!(o.local_files, [LocalFile { path: "a/b.ini".into(), stands_in_for: None }]);
        for (bad, why) in [
            ("*  true  false\n", "only paths, addresses"),
            ("http-websockets  true  false\n", "only paths, addresses"),
            ("*  60  5\n", "only paths, addresses"),
            ("*  https://  http://x\n", "only paths, addresses"),
            ("*  ftp://a.b  http://x\n", "only paths, addresses"),
            ("plugins  a/b  c\n", "only paths, addresses"),
            ("*  /a  $NOPE/a\n", "unknown variable"),
            ("*  /a  /x\n*  /b  /x\n", "already the local value of /a"),
            ("*  /a\n", "expected: OPTION PRODUCTION LOCAL"),
            ("local  a.ini\n", "expected: local PATH"),
        ] {
            let e = read_overrides(bad, &vars).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn paths_and_addresses_are_found_in_option_values() {
        let (paths, addresses) = paths_and_addresses(
            "cmd=/usr/bin/x --settings /etc/a.conf,touch=/b mkdir:/run/h unbit:///var/s http://127.0.0.1:80/x 0.0.0.0:443 :8080 HIGH:!aNULL rel/ative",
        );
        assert_eq!(paths, ["/usr/bin/x", "/etc/a.conf", "/b", "/run/h", "/var/s"]);
        assert_eq!(addresses, ["127.0.0.1:80", "0.0.0.0:443", ":8080"]);
    }
}
