//! The node's nftables table: fixed rules, and what changes (containers, links, dmz, port
//! mappings, the uplink) held in sets and maps, so a change is an element edit whose cost does
//! not grow with the number of containers.
//!
//! The table is `inet <name>` and nothing here ever touches another table. A full apply
//! replaces the table in one `nft -f` transaction (`add table` + `delete table` + the
//! definition), so applying the same [`Elements`] twice yields the same table; a change is
//! rendered by [`render_changes`] as `add element`/`delete element` lines, also one
//! transaction. Why each rule is there: `docs/networking.md`.

use crate::{ctx, NetError, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

/// A port mapping: `(public ip, public port)` to `(private ip, private port)`.
pub type PortMap = BTreeMap<(Ipv4Addr, u16), (Ipv4Addr, u16)>;

/// Everything that varies in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    /// The host ends of this platform's containers: every rule about containers matches
    /// these, so several platforms (each with a table of its own) can share a namespace.
    pub ifs: BTreeSet<String>,
    /// `ifname . ipv4_addr`: the only source address each container interface may use.
    pub ctr_if_ip: BTreeSet<(String, Ipv4Addr)>,
    /// `ipv4_addr . ipv4_addr`: `(a, b)` when a's container links b; traffic between two
    /// containers passes only when both `(a, b)` and `(b, a)` are here.
    pub links: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    /// Containers without a way to the uplink.
    pub dmz: BTreeSet<Ipv4Addr>,
    /// The interfaces that lead to the Internet (masquerade, port mappings).
    pub uplink: BTreeSet<String>,
    pub pm_tcp: PortMap,
    pub pm_udp: PortMap,
    /// The node's tunnel to the other nodes of its Legion (links across nodes, crate
    /// `cluster-links`): traffic through it passes only between a linked pair, and nothing
    /// from it reaches the node or an unlinked container.
    pub tunnel: BTreeSet<String>,
}

/// One container as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub dmz: bool,
    /// The addresses of the containers this one links (accepts traffic from).
    pub links: Vec<Ipv4Addr>,
}

impl Elements {
    /// Adds a container's elements.
    pub fn add_member(&mut self, m: &Member) {
        self.ifs.insert(m.ifname.clone());
        self.ctr_if_ip.insert((m.ifname.clone(), m.ip));
        for peer in &m.links {
            self.links.insert((m.ip, *peer));
        }
        if m.dmz {
            self.dmz.insert(m.ip);
        }
    }
}

fn is_safe_ifname(name: &str) -> bool {
    crate::link::valid_ifname(name)
}

/// The full table, for `nft -f -`: replaces whatever table of that name exists (and only it).
pub fn render_table(table: &str, e: &Elements) -> Result<String> {
    check(table, e)?;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "add table inet {table}");
    let _ = writeln!(w, "delete table inet {table}");
    let _ = writeln!(w, "table inet {table} {{");
    set(w, "ifs", "ifname", e.ifs.iter().map(|i| format!("\"{i}\"")));
    set(w, "ctr_if_ip", "ifname . ipv4_addr", e.ctr_if_ip.iter().map(|(i, a)| format!("\"{i}\" . {a}")));
    set(w, "links", "ipv4_addr . ipv4_addr", e.links.iter().map(|(a, b)| format!("{a} . {b}")));
    set(w, "dmz", "ipv4_addr", e.dmz.iter().map(|a| a.to_string()));
    set(w, "uplink", "ifname", e.uplink.iter().map(|i| format!("\"{i}\"")));
    set(w, "tunnel", "ifname", e.tunnel.iter().map(|i| format!("\"{i}\"")));
    map(w, "pm_tcp", &e.pm_tcp);
    map(w, "pm_udp", &e.pm_udp);
    let net = crate::CONTAINER_NET;
    let rules = format!(
        r#"	chain prerouting {{
		type filter hook prerouting priority raw; policy accept;
		iifname @ifs meta nfproto ipv6 drop
		iifname @ifs iifname . ip saddr != @ctr_if_ip drop
		iifname @ifs fib saddr . iif oif missing drop
		iifname @ifs ip saddr . ip daddr @links ip daddr . ip saddr @links notrack
		iifname @tunnel meta nfproto ipv6 drop
		iifname @tunnel fib saddr . iif oif missing drop
	}}
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname @ifs ct state established,related accept
		iifname @ifs drop
		iifname @tunnel drop
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
		iifname @ifs oifname @ifs ip saddr . ip daddr @links ip daddr . ip saddr @links accept
		iifname @ifs oifname @ifs drop
		iifname @ifs oifname @tunnel ip saddr . ip daddr @links accept
		iifname @tunnel oifname @ifs ip daddr . ip saddr @links accept
		iifname @tunnel drop
		oifname @tunnel drop
		ct state established,related accept
		oifname @ifs ct status dnat accept
		oifname @ifs drop
		iifname @ifs ip daddr {net} drop
		iifname @ifs ip daddr 169.254.0.0/16 drop
		iifname @ifs ip saddr @dmz drop
		iifname @ifs oifname @uplink accept
		iifname @ifs drop
	}}
	chain portmaps {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname @uplink dnat ip to ip daddr . tcp dport map @pm_tcp
		iifname @uplink dnat ip to ip daddr . udp dport map @pm_udp
	}}
	chain outbound {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname @uplink ip saddr {net} masquerade
	}}
}}
"#
    );
    s.push_str(&rules);
    Ok(s)
}

fn set(w: &mut String, name: &str, ty: &str, elements: impl Iterator<Item = String>) {
    let elements: Vec<String> = elements.collect();
    let _ = writeln!(w, "\tset {name} {{");
    let _ = writeln!(w, "\t\ttype {ty}");
    if !elements.is_empty() {
        let _ = writeln!(w, "\t\telements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(w, "\t}}");
}

fn map(w: &mut String, name: &str, m: &PortMap) {
    let _ = writeln!(w, "\tmap {name} {{");
    let _ = writeln!(w, "\t\ttype ipv4_addr . inet_service : ipv4_addr . inet_service");
    if !m.is_empty() {
        let _ = writeln!(w, "\t\telements = {{ {} }}", map_elements(m.iter()).join(", "));
    }
    let _ = writeln!(w, "\t}}");
}

fn map_elements<'a>(it: impl Iterator<Item = (&'a (Ipv4Addr, u16), &'a (Ipv4Addr, u16))>) -> Vec<String> {
    it.map(|((pa, pp), (ca, cp))| format!("{pa} . {pp} : {ca} . {cp}")).collect()
}

/// Names that reach the nft script must be plain: a table name is an identifier, interface
/// names are quoted strings without quotes or backslashes.
fn check(table: &str, e: &Elements) -> Result<()> {
    let ident = !table.is_empty()
        && table.len() <= 64
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ident {
        return Err(NetError(format!(
            "{table:?} is not a usable nftables table name (a letter, then letters, digits, _ -)"
        )));
    }
    for name in e.ifs.iter().chain(e.ctr_if_ip.iter().map(|(i, _)| i)).chain(e.uplink.iter()).chain(e.tunnel.iter()) {
        if !is_safe_ifname(name) {
            return Err(NetError(format!("{name:?} is not an interface name")));
        }
    }
    Ok(())
}

/// The `add element`/`delete element` lines that turn `old` into `new`, empty when equal.
pub fn render_changes(table: &str, old: &Elements, new: &Elements) -> Result<String> {
    check(table, new)?;
    let mut s = String::new();
    let mut edit = |set: &str, gone: Vec<String>, added: Vec<String>| {
        if !gone.is_empty() {
            let _ = writeln!(s, "delete element inet {table} {set} {{ {} }}", gone.join(", "));
        }
        if !added.is_empty() {
            let _ = writeln!(s, "add element inet {table} {set} {{ {} }}", added.join(", "));
        }
    };
    fn diff<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> (Vec<T>, Vec<T>) {
        (a.difference(b).cloned().collect(), b.difference(a).cloned().collect())
    }
    let (g, a) = diff(&old.ifs, &new.ifs);
    let f = |v: Vec<String>| v.into_iter().map(|x| format!("\"{x}\"")).collect();
    edit("ifs", f(g), f(a));
    let (g, a) = diff(&old.ctr_if_ip, &new.ctr_if_ip);
    let f = |v: Vec<(String, Ipv4Addr)>| v.into_iter().map(|(i, a)| format!("\"{i}\" . {a}")).collect();
    edit("ctr_if_ip", f(g), f(a));
    let (g, a) = diff(&old.links, &new.links);
    let f = |v: Vec<(Ipv4Addr, Ipv4Addr)>| v.into_iter().map(|(x, y)| format!("{x} . {y}")).collect();
    edit("links", f(g), f(a));
    let (g, a) = diff(&old.dmz, &new.dmz);
    let f = |v: Vec<Ipv4Addr>| v.into_iter().map(|x| x.to_string()).collect();
    edit("dmz", f(g), f(a));
    let (g, a) = diff(&old.uplink, &new.uplink);
    let f = |v: Vec<String>| v.into_iter().map(|x| format!("\"{x}\"")).collect();
    edit("uplink", f(g), f(a));
    let (g, a) = diff(&old.tunnel, &new.tunnel);
    edit("tunnel", f(g), f(a));
    for (name, o, n) in [("pm_tcp", &old.pm_tcp, &new.pm_tcp), ("pm_udp", &old.pm_udp, &new.pm_udp)] {
        // A changed target is a delete then an add of the same key (maps hold one value a key).
        let gone: Vec<String> =
            o.iter().filter(|(k, v)| n.get(k) != Some(v)).map(|((pa, pp), _)| format!("{pa} . {pp}")).collect();
        let added = map_elements(n.iter().filter(|(k, v)| o.get(k) != Some(v)));
        edit(name, gone, added);
    }
    Ok(s)
}

/// How `nft` is started (the caller may need to close inherited descriptors first).
pub type Spawn = fn(Command) -> std::io::Result<Child>;

/// Runs `nft` on this namespace's ruleset.
#[derive(Debug, Clone)]
pub struct Nft {
    binary: String,
    spawn: Spawn,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

impl Nft {
    /// Debian's `nft` (package `nftables`), looked for where Debian puts it, whatever the
    /// caller's `PATH`.
    pub fn new() -> Nft {
        let binary = ["/usr/sbin/nft", "/sbin/nft"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map_or_else(|| "nft".to_string(), |p| p.to_string());
        Nft { binary, spawn: |mut c| c.spawn() }
    }

    pub fn with_spawn(mut self, spawn: Spawn) -> Nft {
        self.spawn = spawn;
        self
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<std::process::Output> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = (self.spawn)(cmd).map_err(ctx(format!("run {}", self.binary)))?;
        if let (Some(mut stdin), Some(text)) = (child.stdin.take(), input) {
            stdin.write_all(text.as_bytes()).map_err(ctx("write the nft script"))?;
        }
        child.wait_with_output().map_err(ctx("wait for nft"))
    }

    /// Applies a script as one transaction: all of it or nothing.
    pub fn apply(&self, script: &str) -> Result<()> {
        if script.is_empty() {
            return Ok(());
        }
        let out = self.run(&["-f", "-"], Some(script))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NetError(format!("nft -f refused the change: {}", String::from_utf8_lossy(&out.stderr).trim())))
        }
    }

    /// `nft list table inet <table>`, `None` when the table does not exist.
    pub fn list(&self, table: &str, json: bool) -> Result<Option<String>> {
        let args: &[&str] =
            if json { &["-j", "list", "table", "inet", table] } else { &["list", "table", "inet", table] };
        let out = self.run(args, None)?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        Err(NetError(format!("nft list table inet {table}: {}", err.trim())))
    }

    /// Deletes the table if it exists (and nothing else).
    pub fn delete(&self, table: &str) -> Result<()> {
        self.apply(&format!("add table inet {table}\ndelete table inet {table}\n"))
    }
}

/// `nft -j list table` made comparable across re-creations of the table: without the handles
/// the kernel numbers objects with, and with every set's elements sorted (a hash set lists
/// them in an order of its own). Two listings of tables with the same rules and elements
/// compare equal.
pub fn comparable(json: &str) -> Result<serde_json::Value> {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(walk);
                if let Some(serde_json::Value::Array(elem)) = m.get_mut("elem") {
                    elem.sort_by_key(|e| e.to_string());
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).map_err(ctx("nft -j output"))?;
    walk(&mut v);
    Ok(v)
}

/// The elements of every set and map as `nft -j` lists them (each element's JSON text,
/// sorted), for comparing a listing with what was applied.
pub fn listed_elements(e: &Elements) -> BTreeMap<String, Vec<String>> {
    use serde_json::{json, Value};
    let ip = |a: &Ipv4Addr| Value::String(a.to_string());
    let mut sets: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    sets.insert("ifs".into(), e.ifs.iter().map(|i| json!(i)).collect());
    sets.insert("ctr_if_ip".into(), e.ctr_if_ip.iter().map(|(i, a)| json!({"concat": [i, ip(a)]})).collect());
    sets.insert("links".into(), e.links.iter().map(|(a, b)| json!({"concat": [ip(a), ip(b)]})).collect());
    sets.insert("dmz".into(), e.dmz.iter().map(ip).collect());
    sets.insert("uplink".into(), e.uplink.iter().map(|i| json!(i)).collect());
    sets.insert("tunnel".into(), e.tunnel.iter().map(|i| json!(i)).collect());
    for (name, m) in [("pm_tcp", &e.pm_tcp), ("pm_udp", &e.pm_udp)] {
        let elems =
            m.iter().map(|((pa, pp), (ca, cp))| json!([{"concat": [ip(pa), pp]}, {"concat": [ip(ca), cp]}])).collect();
        sets.insert(name.into(), elems);
    }
    sets.into_iter()
        .map(|(k, v)| {
            let mut v: Vec<String> = v.iter().map(Value::to_string).collect();
            v.sort();
            (k, v)
        })
        .collect()
}

/// Splits a `nft -j list table` listing into its skeleton (tables, chains, rules, set
/// declarations: what only a full apply changes) and the elements of each set and map.
fn split_listing(json: &str) -> Result<(serde_json::Value, BTreeMap<String, Vec<String>>)> {
    let mut v = comparable(json)?;
    let mut elements = BTreeMap::new();
    if let Some(items) = v.get_mut("nftables").and_then(|n| n.as_array_mut()) {
        for item in items {
            for kind in ["set", "map"] {
                if let Some(obj) = item.get_mut(kind).and_then(|o| o.as_object_mut()) {
                    let name = obj.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
                    let elems = match obj.remove("elem") {
                        Some(serde_json::Value::Array(a)) => a.iter().map(serde_json::Value::to_string).collect(),
                        _ => Vec::new(),
                    };
                    let mut elems: Vec<String> = elems;
                    elems.sort();
                    elements.insert(name, elems);
                }
            }
        }
    }
    Ok((v, elements))
}

/// The table the node wants and the one it last applied, kept equal at element granularity.
pub struct Firewall {
    pub table: String,
    nft: Nft,
    applied: Option<Elements>,
    /// The table's skeleton right after the last full apply (element edits do not change it).
    skeleton: Option<serde_json::Value>,
}

impl Firewall {
    pub fn new(table: &str, nft: Nft) -> Firewall {
        Firewall { table: table.to_string(), nft, applied: None, skeleton: None }
    }

    /// Makes the table hold `want`: element edits from the last applied state (one `nft`
    /// run whose cost does not depend on the number of containers), or the whole table when
    /// there is none or the edits are refused (the table was changed under us). Returns
    /// whether anything had to change.
    pub fn sync(&mut self, want: &Elements) -> Result<bool> {
        if self.applied.as_ref() == Some(want) {
            return Ok(false);
        }
        let edited = match &self.applied {
            Some(old) => {
                let script = render_changes(&self.table, old, want)?;
                self.nft.apply(&script).is_ok()
            }
            None => false,
        };
        if !edited {
            self.apply_full(want)?;
        }
        self.applied = Some(want.clone());
        Ok(true)
    }

    fn apply_full(&mut self, want: &Elements) -> Result<()> {
        self.applied = None;
        self.nft.apply(&render_table(&self.table, want)?)?;
        let listing =
            self.nft.list(&self.table, true)?.ok_or_else(|| NetError(format!("table inet {} vanished", self.table)))?;
        self.skeleton = Some(split_listing(&listing)?.0);
        self.applied = Some(want.clone());
        Ok(())
    }

    /// Re-applies the whole table when it is missing or differs from what was applied last
    /// (rules, chains, sets, or any element). Returns whether it had to.
    pub fn verify(&mut self) -> Result<bool> {
        let Some(want) = self.applied.clone() else { return Ok(false) };
        let intact = match self.nft.list(&self.table, true)? {
            None => false,
            Some(listing) => {
                let (skeleton, elements) = split_listing(&listing)?;
                Some(skeleton) == self.skeleton && elements == listed_elements(&want)
            }
        };
        if intact {
            return Ok(false);
        }
        self.apply_full(&want)?;
        Ok(true)
    }

    /// Removes the table (Emperor exit).
    pub fn remove(&mut self) -> Result<()> {
        self.applied = None;
        self.skeleton = None;
        self.nft.delete(&self.table)
    }
}

#[cfg(test)]
mod tests;
