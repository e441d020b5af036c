//! The reader thread: reads and validates records off the event loop and hands them over in
//! chunks, through bounded channels, to the lanes of the lookup stage.

use tokio::sync::mpsc::Receiver;

use super::{InputError, Reader, Record};

/// Rows handed over at once by [`spawn`]: large enough to amortise the channel.
const CHUNK_ROWS: usize = 512;
/// Chunks buffered between the reader thread and the pipeline: bounds memory for any file size.
const CHUNKS_BUFFERED: usize = 4;

/// Reads and validates records on a thread of their own, so parsing overlaps the pipeline and a
/// slow stdin never blocks the event loop. Chunk `k` goes to lane `k % lanes`, so consumers that
/// take turns over the lanes see the file in order; an error goes to the lane whose turn it is.
pub fn spawn(mut reader: Reader, lanes: usize) -> Vec<Receiver<ChunkResult>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes.max(1))
        .map(|_| tokio::sync::mpsc::channel(CHUNKS_BUFFERED))
        .unzip();
    std::thread::spawn(move || {
        for lane in (0..senders.len()).cycle() {
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            let mut failure = None;
            while chunk.len() < CHUNK_ROWS {
                match reader.next_record() {
                    Some(Ok(record)) => chunk.push(record),
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            let last = chunk.len() < CHUNK_ROWS;
            let mut lane = lane;
            // A closed channel means the run stopped: nothing left to do.
            if !chunk.is_empty() {
                if senders[lane].blocking_send(Ok(chunk)).is_err() {
                    return;
                }
                lane = (lane + 1) % senders.len();
            }
            if let Some(e) = failure {
                let _ = senders[lane].blocking_send(Err(e));
                return;
            }
            if last {
                return;
            }
        }
    });
    receivers
}

/// What the reader thread hands over: a chunk of records, or the error that ended the file.
pub type ChunkResult = Result<Vec<Record>, InputError>;
