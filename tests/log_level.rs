//! The agent's logging leaves the `log` crate's maximum level at the
//! configured one: notify and sled log through `log` on their hot paths,
//! and at TRACE each of those records went through the bridge to tracing
//! and its filters only to be dropped. One test in its own binary: the
//! logger is global to the process.

use tracing_subscriber::filter::Targets;

#[test]
fn log_records_above_the_configured_level_are_cut_at_the_macro() {
    let filter = Targets::new().with_default(tracing::Level::INFO);
    let _guard = mosaic_shipper::logging::init_stderr(filter);
    assert_eq!(
        tracing::level_filters::LevelFilter::current(),
        tracing::level_filters::LevelFilter::INFO
    );
    assert_eq!(log::max_level(), log::LevelFilter::Info);
    assert!(!log::log_enabled!(target: "notify", log::Level::Trace));
}
