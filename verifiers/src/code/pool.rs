//! A counting semaphore that bounds how many sandboxed programs run at once, however many threads
//! call the verifier.

use std::sync::{Condvar, Mutex};

/// At most `capacity` holders of a [`Permit`] at a time.
pub(crate) struct Pool {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A slot in the pool, returned on drop.
pub(crate) struct Permit<'a> {
    pool: &'a Pool,
}

impl Pool {
    /// A pool of `capacity` slots (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Pool { free: Mutex::new(capacity.max(1)), freed: Condvar::new() }
    }

    /// Blocks until a slot is free and takes it.
    pub(crate) fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit { pool: self }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.pool.freed.notify_one();
    }
}
