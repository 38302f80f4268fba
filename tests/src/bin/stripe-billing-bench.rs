//! `make bench` driver: see `stripe_billing_tests::bench`. Arguments name the benchmarks to
//! run (signature, ledger, webhook, worker, api, history); none runs all.
#[tokio::main]
async fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    stripe_billing_tests::bench::main(&which).await;
}
