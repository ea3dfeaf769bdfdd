//! `unbit-alarmd`: the node's alarm relay (see [`alarms::relay`] and `docs/alarms.md`).

fn main() {
    let cfg = match alarms::relay::Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unbit-alarmd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = alarms::relay::run(cfg) {
        eprintln!("unbit-alarmd: {e}");
        std::process::exit(1);
    }
}
