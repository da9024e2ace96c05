//! `kubectl-cnpg`: the cnpg-rs plugin for kubectl (also usable on its own).

fn main() {
    let code = cnpg_operator::cli::run(
        std::env::args_os(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
