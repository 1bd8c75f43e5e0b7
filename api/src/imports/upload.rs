//! Reads a `text/csv` request body as a stream. A blocking task runs the csv reader over
//! the body chunks as they arrive and sends parsed rows in small batches, so an upload of
//! any length needs memory for a few batches, not for the file.

use std::io;
use std::ops::ControlFlow;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::csv_rows::{read_csv, CsvFormat, HeaderError, ParsedRow, ReadError};
use crate::http::problem::ApiError;

/// Number of rows per batch.
pub const ROWS_PER_BATCH: usize = 1000;

/// Batches buffered between the reader and the consumer. Two keep the reader busy while
/// the consumer writes one, and bound memory to three batches.
const BUFFERED_BATCHES: usize = 2;

/// A unit of the reader's output: first the columns of the header, then rows.
#[derive(Debug)]
pub enum Batch<F: CsvFormat> {
    /// The header fit the format.
    Header(F::Columns),
    /// Up to [`ROWS_PER_BATCH`] data records in file order.
    Rows(Vec<ParsedRow<F::Row>>),
}

/// A reason to reject a whole upload.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The header is missing or does not fit, or the body could not be read.
    #[error(transparent)]
    Read(ReadError),
    /// The body is larger than the endpoint accepts.
    #[error("the CSV file is larger than {limit} bytes; split it into smaller files")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The file has more data rows than the endpoint accepts.
    #[error("the CSV file has more than {limit} rows; split it into smaller files")]
    TooManyRows {
        /// The limit, in data rows.
        limit: u64,
    },
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        let detail = error.to_string();
        match error {
            UploadError::Read(ReadError::Header(HeaderError::Missing { .. })) => {
                ApiError::bad_request("missing_csv_header", detail)
            }
            UploadError::Read(ReadError::Header(HeaderError::Invalid { .. })) => {
                ApiError::bad_request("invalid_csv_header", detail)
            }
            UploadError::Read(ReadError::Io(_)) => ApiError::bad_request(
                "unreadable_body",
                "the request body could not be read to its end; send the file again",
            ),
            UploadError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail)
            }
            UploadError::TooManyRows { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_rows", detail)
            }
        }
    }
}

/// Marks the I/O error that the byte limit raises inside the body stream.
#[derive(Debug, thiserror::Error)]
#[error("the body exceeds the byte limit")]
struct OverLimit;

/// A CSV body being read in the background.
pub struct CsvUpload<F: CsvFormat> {
    batches: mpsc::Receiver<Batch<F>>,
    reader: JoinHandle<Result<(), UploadError>>,
}

impl<F: CsvFormat> CsvUpload<F> {
    /// Starts reading `body` in `format`, rejecting it beyond `max_bytes` or `max_rows`.
    ///
    /// Must be called inside the Tokio runtime, because the blocking reader waits on
    /// the body through the runtime's handle.
    pub fn start(format: F, body: Body, max_bytes: usize, max_rows: u64) -> Self {
        let mut received = 0_usize;
        let chunks = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(io::Error::other)?;
            received = received.saturating_add(chunk.len());
            if received > max_bytes {
                return Err(io::Error::other(OverLimit));
            }
            Ok::<_, io::Error>(chunk)
        });
        let input = SyncIoBridge::new(StreamReader::new(chunks));
        let (sender, batches) = mpsc::channel(BUFFERED_BATCHES);
        let reader = tokio::task::spawn_blocking(move || {
            read_in_batches(&format, input, &sender, max_bytes, max_rows)
        });
        Self { batches, reader }
    }

    /// Returns the next batch, or `None` when the reader stopped. [`CsvUpload::finish`]
    /// then returns whether it reached the end of the file.
    pub async fn next(&mut self) -> Option<Batch<F>> {
        self.batches.recv().await
    }

    /// Waits for the reader and returns why it stopped early, if it did.
    ///
    /// # Errors
    /// The [`UploadError`] that ended the reading.
    pub async fn finish(self) -> Result<(), UploadError> {
        drop(self.batches);
        self.reader
            .await
            .unwrap_or_else(|error| Err(UploadError::Read(ReadError::Io(io::Error::other(error)))))
    }
}

/// Runs on a blocking thread: reads the whole input and sends it in batches.
fn read_in_batches<F: CsvFormat>(
    format: &F,
    input: impl io::Read,
    sender: &mpsc::Sender<Batch<F>>,
    max_bytes: usize,
    max_rows: u64,
) -> Result<(), UploadError> {
    let mut batch = Vec::with_capacity(ROWS_PER_BATCH);
    let mut rows = 0_u64;
    let mut too_many_rows = false;
    let send = |batch: Batch<F>| {
        // A closed channel means the consumer gave up; stop reading.
        match sender.blocking_send(batch) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };

    let result = read_csv(
        format,
        input,
        |columns| send(Batch::Header(columns.clone())),
        |row| {
            rows += 1;
            if rows > max_rows {
                too_many_rows = true;
                return ControlFlow::Break(());
            }
            batch.push(row);
            if batch.len() < ROWS_PER_BATCH {
                return ControlFlow::Continue(());
            }
            send(Batch::Rows(std::mem::replace(
                &mut batch,
                Vec::with_capacity(ROWS_PER_BATCH),
            )))
        },
    );

    match result {
        Err(ReadError::Io(error)) if is_over_limit(&error) => {
            return Err(UploadError::TooLarge { limit: max_bytes })
        }
        Err(error) => return Err(UploadError::Read(error)),
        Ok(()) => {}
    }
    if too_many_rows {
        return Err(UploadError::TooManyRows { limit: max_rows });
    }
    if !batch.is_empty() {
        let _ = send(Batch::Rows(batch));
    }
    Ok(())
}

fn is_over_limit(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OverLimit>().is_some())
}

/// Checks that the request declares a CSV body.
///
/// # Errors
/// 415 when `Content-Type` is not `text/csv` (parameters such as `charset=utf-8` are
/// allowed).
pub fn require_csv(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("text/csv"));
    if is_csv {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the file as Content-Type: text/csv, encoded as UTF-8",
    ))
}
