//! Reusable 256 KiB buffers for blob bytes on their way to a client: file reads and fill chunks.
//!
//! A fresh buffer of this size costs the allocator an `mmap` or a heap top it trims again, page
//! faults as it is first touched, and (for reads) zeroing; at gigabytes a second those showed
//! as a tenth of the CPU. A buffer goes back to the pool when the last `Bytes` of it is dropped
//! (hyper has written it, or a fill's ring let it go), up to a bound, so the pool itself never
//! holds more than `POOL_BUFFERS` of them.

use std::sync::Mutex;

use bytes::Bytes;

/// Size of every pooled buffer: a file read, or a fill's write to its temp file.
pub(crate) const BUFFER_SIZE: usize = 256 * 1024;

/// Idle buffers kept at most (8 MiB).
const POOL_BUFFERS: usize = 32;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of `BUFFER_SIZE` initialized bytes, from the pool when it has one. `len` says how
/// many hold data.
pub(crate) struct Buffer {
    data: Vec<u8>,
    len: usize,
}

impl Buffer {
    pub(crate) fn take() -> Buffer {
        let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Buffer {
            data: pooled.unwrap_or_else(|| vec![0u8; BUFFER_SIZE]),
            len: 0,
        }
    }

    /// The bytes holding data.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The room after the data, to read into; say how much was used with [`Buffer::advance`].
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.len..]
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.data.len());
    }

    /// Appends as much of `bytes` as fits; returns how much did.
    pub(crate) fn extend(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(self.data.len() - self.len);
        self.data[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
        take
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.data.len()
    }

    /// The data as `Bytes`; the buffer returns to the pool when the last of them is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.filled()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.data.len() != BUFFER_SIZE {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_BUFFERS {
            pool.push(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_holds_what_was_put_in_and_goes_back_to_the_pool() {
        let mut b = Buffer::take();
        assert_eq!(b.extend(b"abc"), 3);
        b.spare()[..2].copy_from_slice(b"de");
        b.advance(2);
        assert_eq!(b.filled(), b"abcde");
        let bytes = b.freeze();
        let half = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&half[..], b"bc");
        drop(half);
        // Reused: still full size, whatever it held before.
        let mut again = Buffer::take();
        assert_eq!(again.len(), 0);
        assert_eq!(again.spare().len(), BUFFER_SIZE);
        let big = vec![7u8; BUFFER_SIZE + 10];
        assert_eq!(again.extend(&big), BUFFER_SIZE);
        assert!(again.is_full());
    }
}
