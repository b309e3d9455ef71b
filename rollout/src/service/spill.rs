//! A weight push's body, streamed to disk: the request body goes chunk by chunk into an unnamed
//! temporary file (`tempfile::tempfile_in`: `O_TMPFILE` on Linux, so it has no name to leave
//! behind even if the server dies), never whole in memory. The file vanishes when its last handle
//! (or the engine's map of it, `engine/mapped.rs`) is dropped: after the update is applied, or on
//! any error.
//!
//! Where: the weights directory when the server has one (`--weights-dir`, a disk sized for
//! weights), else the system's temporary directory (`TMPDIR`, else `/tmp`; a `tmpfs` there holds
//! the spill in memory, so point `TMPDIR` at a disk for large models). A disk error (full disk,
//! quota, missing or read-only directory) is a 507 when space ran out and a 500 otherwise, both
//! naming the directory and the error; the rest of the body is then read and dropped (up to
//! [`super::guard::DRAIN_LIMIT`]) so that the client gets the answer.

use super::ApiError;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::Path;
use tokio_stream::StreamExt;

/// Chunks queued between the body and the file's writer (hyper's chunks are at most a few hundred
/// KiB, so this bounds the bytes in flight to a few MiB).
const QUEUE: usize = 8;

/// Streams `body` into an unnamed file in `dir`; the file, written.
pub(crate) async fn spill(body: Body, dir: &Path) -> Result<File, ApiError> {
    let file = tempfile::tempfile_in(dir).map_err(|e| disk_error(dir, &e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = file;
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        file.flush()?;
        Ok::<_, std::io::Error>(file)
    });
    let mut frames = body.into_data_stream();
    let (mut read, mut dropped) = (Ok(()), 0usize);
    while let Some(frame) = frames.next().await {
        let chunk = match frame {
            Ok(chunk) => chunk,
            Err(e) => {
                read = Err(ApiError::invalid("body", format!("the request body could not be read: {e}")));
                break;
            }
        };
        if tx.is_closed() {
            // The writer failed (its error is answered below): drain, so the client reads it.
            dropped = dropped.saturating_add(chunk.len());
            if dropped > super::guard::DRAIN_LIMIT {
                break;
            }
        } else {
            let _ = tx.send(chunk).await;
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| ApiError::unavailable(format!("spilling the weights failed: {e}")))?;
    let file = written.map_err(|e| disk_error(dir, &e))?;
    read?;
    Ok(file)
}

/// The answer to a disk error while spilling to `dir`: 507 when space ran out, else 500.
fn disk_error(dir: &Path, e: &std::io::Error) -> ApiError {
    let status = match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = format!("spilling the pushed weights to {} failed: {e}", dir.display());
    ApiError::new(status, "server_error", message)
}

#[cfg(test)]
mod tests {
    use super::disk_error;
    use std::path::Path;

    #[test]
    fn a_full_disk_is_507_and_names_the_directory_and_the_error() {
        let full = disk_error(Path::new("/spill"), &std::io::Error::from_raw_os_error(28)); // ENOSPC
        assert_eq!(full.status.as_u16(), 507);
        assert!(
            full.message.contains("/spill") && full.message.contains("No space left on device"),
            "{}",
            full.message
        );
        let missing = disk_error(Path::new("/spill"), &std::io::Error::from_raw_os_error(2)); // ENOENT
        assert_eq!(missing.status.as_u16(), 500);
        assert!(missing.message.contains("No such file or directory"), "{}", missing.message);
    }
}
