//! SIGINT/SIGTERM for the benchmarks: a thread waits for either, runs the benchmark's cleanup
//! (stopping its children), then exits with 130.

use anyhow::{Context, Result};

/// Runs `cleanup` and exits when the benchmark is interrupted.
pub fn on_interrupt(cleanup: impl FnOnce() + Send + 'static) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal-handling runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            cleanup();
            std::process::exit(130);
        })
        .context("spawning the signal thread")?;
    Ok(())
}
