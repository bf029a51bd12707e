//! The channel's buffer: a queue that senders push to and receivers pop from without taking the
//! channel's lock. Lock-free (crossbeam-queue's `ArrayQueue` and `SegQueue`) in normal builds;
//! under `--cfg trellis_loom` a locked `VecDeque` with the same contract, so the model checks
//! explore the protocol around it (the signal word and the fences in `state.rs`) rather than
//! the queue's insides.

/// Capacities up to this get a fixed ring allocated up front; larger ones (short of unbounded)
/// get a growable queue and a counter that enforces the bound.
const RING_MAX: usize = 1024;

#[cfg(not(trellis_loom))]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crossbeam_queue::{ArrayQueue, SegQueue};

    pub(in crate::channel) enum Buffer<T> {
        /// Capacity 0: nothing is ever buffered (rendezvous).
        Zero,
        /// A fixed ring of the channel's capacity.
        Ring(ArrayQueue<T>),
        /// A growable queue, bounded by a reservation counter: a push first reserves a place.
        Counted {
            queue: SegQueue<T>,
            reserved: AtomicUsize,
            capacity: usize,
        },
        /// No bound at all.
        Unbounded(SegQueue<T>),
    }

    impl<T> Buffer<T> {
        pub(in crate::channel) fn new(capacity: usize) -> Self {
            match capacity {
                0 => Buffer::Zero,
                usize::MAX => Buffer::Unbounded(SegQueue::new()),
                c if c <= super::RING_MAX => Buffer::Ring(ArrayQueue::new(c)),
                c => Buffer::Counted {
                    queue: SegQueue::new(),
                    reserved: AtomicUsize::new(0),
                    capacity: c,
                },
            }
        }

        /// Appends `value`, or hands it back when the buffer is full.
        pub(in crate::channel) fn push(&self, value: T) -> Result<(), T> {
            match self {
                Buffer::Zero => Err(value),
                Buffer::Ring(queue) => queue.push(value),
                Buffer::Unbounded(queue) => {
                    queue.push(value);
                    Ok(())
                }
                Buffer::Counted {
                    queue,
                    reserved,
                    capacity,
                } => {
                    if reserved.fetch_add(1, Ordering::AcqRel) >= *capacity {
                        reserved.fetch_sub(1, Ordering::AcqRel);
                        return Err(value);
                    }
                    queue.push(value);
                    Ok(())
                }
            }
        }

        /// Takes the oldest value.
        pub(in crate::channel) fn pop(&self) -> Option<T> {
            match self {
                Buffer::Zero => None,
                Buffer::Ring(queue) => queue.pop(),
                Buffer::Unbounded(queue) => queue.pop(),
                Buffer::Counted {
                    queue, reserved, ..
                } => {
                    let value = queue.pop()?;
                    reserved.fetch_sub(1, Ordering::AcqRel);
                    Some(value)
                }
            }
        }

        /// Values in the buffer now (a snapshot while others push and pop).
        pub(in crate::channel) fn len(&self) -> usize {
            match self {
                Buffer::Zero => 0,
                Buffer::Ring(queue) => queue.len(),
                Buffer::Unbounded(queue) | Buffer::Counted { queue, .. } => queue.len(),
            }
        }
    }
}

#[cfg(trellis_loom)]
mod imp {
    use std::collections::VecDeque;

    use loom::sync::Mutex;

    pub(in crate::channel) struct Buffer<T> {
        queue: Mutex<VecDeque<T>>,
        capacity: usize,
    }

    impl<T> Buffer<T> {
        pub(in crate::channel) fn new(capacity: usize) -> Self {
            let _ = super::RING_MAX;
            Buffer {
                queue: Mutex::new(VecDeque::new()),
                capacity,
            }
        }

        pub(in crate::channel) fn push(&self, value: T) -> Result<(), T> {
            let mut queue = self.queue.lock().unwrap();
            if queue.len() >= self.capacity {
                return Err(value);
            }
            queue.push_back(value);
            Ok(())
        }

        pub(in crate::channel) fn pop(&self) -> Option<T> {
            self.queue.lock().unwrap().pop_front()
        }

        pub(in crate::channel) fn len(&self) -> usize {
            self.queue.lock().unwrap().len()
        }
    }
}

pub(super) use imp::Buffer;
