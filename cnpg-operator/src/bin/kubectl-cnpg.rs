//! `kubectl-cnpg`: the cnpg-rs plugin for kubectl (also usable on its own).

fn main() {
    // Unlocked handles: background tasks of `local up` print too, and a lock held here for
    // the whole run would block them forever.
    let code = cnpg_operator::plugin::run(
        std::env::args_os(),
        &mut std::io::stdin(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}
