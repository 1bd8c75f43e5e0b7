//! `referrals serve`: the HTTP API and, unless disabled, the projection workers, the
//! timesheet import worker, the scheduled referral rules and the notification
//! dispatcher, with a graceful shutdown on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use referrals_projections::reactors::PayoutRequester;
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::{models, Projection};
use referrals_store::application::Application;
use referrals_store::crypto::MasterKey;
use referrals_store::database;
use referrals_workers::clock::SystemClock;
use referrals_workers::dispatch::Dispatcher;
use referrals_workers::rules::ReferralRules;
use referrals_workers::settings::NotificationSettings;
use tokio::sync::watch;

use crate::http;
use crate::http::edge::EdgeOptions;
use crate::tls::TlsFiles;

/// Connections the server keeps to PostgreSQL.
const POOL_SIZE: u32 = 20;

/// What `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on.
    pub bind: SocketAddr,
    /// Whether this process also runs the projection workers, the timesheet import
    /// worker, the scheduled rules and the notification dispatcher.
    pub workers: bool,
    /// Lines printed to standard output once the address is bound, for a person at a
    /// terminal; `{address}` stands for the bound address.
    pub announce: Option<String>,
    /// The certificate and key to serve HTTPS with; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Origins allowed to call the API from a browser; CORS is closed when empty.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// A streaming replica for list and report queries; the primary serves them when
    /// `None`.
    pub database_read_url: Option<String>,
}

/// Runs the server until SIGTERM or Ctrl-C, then lets requests in flight finish and
/// stops the workers after their current batch.
///
/// # Errors
/// Returns an error when a database cannot be reached, the TLS files are unusable or the
/// address cannot be bound.
pub async fn serve(
    database_url: &str,
    master_key: MasterKey,
    options: ServeOptions,
) -> anyhow::Result<()> {
    // Read before anything starts, so a half-configured provider stops the start.
    let notifications = options
        .workers
        .then(|| {
            NotificationSettings::from_lookup(
                |name| std::env::var(name).ok(),
                std::path::Path::new(crate::config::DATA_DIR),
            )
        })
        .transpose()?;
    let connect_options = database::parse_url(database_url)?;
    let pool = database::connect(&connect_options, POOL_SIZE).await?;
    let read_options = match &options.database_read_url {
        Some(url) => Some(database::parse_url(url).context("DATABASE_READ_URL")?),
        None => None,
    };
    let read_pool = match &read_options {
        Some(read_options) => database::connect(read_options, POOL_SIZE).await?,
        None => pool.clone(),
    };
    // Load the certificate before binding, so a bad file fails before anything starts.
    let tls_config = options
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    let app = Arc::new(Application::new(pool.clone(), master_key));
    let (stop, stopping) = watch::channel(false);

    // Bind first: a busy address must fail before any worker starts.
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; set BIND_ADDR to a free address",
                options.bind
            )
        })?;
    let address = listener.local_addr()?;
    if let Some(announce) = &options.announce {
        println!("{}", announce.replace("{address}", &address.to_string()));
    }

    let workers = notifications.map(|notifications| {
        let mut projections: Vec<Arc<dyn Projection>> =
            models::all().into_iter().map(Arc::from).collect();
        projections.push(Arc::new(PayoutRequester::new(app.clone())));
        projections.extend(referrals_workers::projections());
        let runner = ProjectionRunner::new(pool.clone());
        let projection_stopping = stopping.clone();
        let projections =
            tokio::spawn(async move { runner.run(projections, projection_stopping).await });
        let import_app = app.clone();
        let import_stopping = stopping.clone();
        let imports = tokio::spawn(async move {
            crate::imports::timesheets::run_worker(&import_app, import_stopping).await;
        });

        let rules = ReferralRules::new(app.clone(), Arc::new(SystemClock));
        let rules = tokio::spawn(referrals_workers::run_rules(
            rules,
            referrals_workers::RULES_INTERVAL,
            stopping.clone(),
        ));
        tracing::info!(providers = %notifications.description, "notification providers chosen");
        let dispatcher = Dispatcher::new(
            app.clone(),
            notifications.email,
            notifications.sms,
            notifications.retry,
            Arc::new(SystemClock),
        )
        .with_claim_lease(notifications.claim_lease);
        let dispatcher = tokio::spawn(referrals_workers::run_dispatcher(
            dispatcher,
            referrals_workers::DISPATCH_INTERVAL,
            stopping.clone(),
        ));
        [projections, imports, rules, dispatcher]
    });

    tracing::info!(
        %address,
        database = %database::describe(&connect_options),
        read_database = %read_options.as_ref().map_or_else(
            || "primary".to_owned(),
            database::describe,
        ),
        https = tls_config.is_some(),
        cors_origins = options.cors_origins.len(),
        workers = options.workers,
        "serving"
    );
    let edge = EdgeOptions {
        https: tls_config.is_some(),
        cors_origins: options.cors_origins.clone(),
    };
    let router = http::edge::with_edge_layers(
        http::application_with_read_pool(app, pool, read_pool),
        &edge,
    );
    match tls_config {
        None => axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal(stop))
        .await
        .context("the HTTP server failed")?,
        Some(tls_config) => serve_https(listener, tls_config, router, stop).await?,
    }

    for worker in workers.into_iter().flatten() {
        worker.await.context("a background worker failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves HTTPS on `listener` until SIGTERM or Ctrl-C, then waits for the requests in
/// flight like the plain HTTP server does.
async fn serve_https(
    listener: tokio::net::TcpListener,
    tls_config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    stop: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        shutdown_signal(stop).await;
        // No deadline, as with the plain HTTP server: idle connections close at once and
        // busy ones after their response.
        signal_handle.graceful_shutdown(None);
    });
    let rustls_config = axum_server::tls_rustls::RustlsConfig::from_config(tls_config);
    axum_server::from_tcp_rustls(listener.into_std()?, rustls_config)?
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("the HTTPS server failed")
}

/// Resolves on SIGTERM or Ctrl-C and tells the workers to stop.
async fn shutdown_signal(stop: watch::Sender<bool>) {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop.send(true);
}
