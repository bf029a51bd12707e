//! A FIFO queue of waiting tasks whose wake-up can carry a grant (a permit, the lock, an
//! unpark): the grant is recorded in the waiter's slot before it is woken, so a waiter that is
//! cancelled or dropped after being granted can keep it or pass it on, and nothing is lost.

use std::collections::VecDeque;
use std::task::Waker;

use crate::instrument::TaskId;
use crate::slab::Slab;

#[derive(Default)]
pub(crate) struct WaitQueue {
    slots: Slab<Slot>,
    order: VecDeque<usize>,
}

struct Slot {
    waker: Waker,
    granted: bool,
    /// The waiting task, when it is a tokio task: a lock hands itself to this owner.
    task: Option<TaskId>,
}

impl WaitQueue {
    pub(crate) fn new() -> Self {
        WaitQueue {
            slots: Slab::default(),
            order: VecDeque::new(),
        }
    }

    /// Waiters not yet granted.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn push(&mut self, waker: &Waker, task: Option<TaskId>) -> usize {
        let key = self.slots.insert(Slot {
            waker: waker.clone(),
            granted: false,
            task,
        });
        self.order.push_back(key);
        key
    }

    /// Grants the first waiter; returns its waker, to wake after releasing the lock.
    pub(crate) fn grant_first(&mut self) -> Option<Waker> {
        self.grant_first_with_key().map(|(_, waker)| waker)
    }

    /// Grants the first waiter; returns its key and its waker.
    pub(crate) fn grant_first_with_key(&mut self) -> Option<(usize, Waker)> {
        self.grant_first_with_task()
            .map(|(key, waker, _)| (key, waker))
    }

    /// Grants the first waiter; returns its key, its waker and its task.
    pub(crate) fn grant_first_with_task(&mut self) -> Option<(usize, Waker, Option<TaskId>)> {
        let key = self.order.pop_front()?;
        let slot = self.slots.get_mut(key).expect("queued slots exist");
        slot.granted = true;
        Some((
            key,
            std::mem::replace(&mut slot.waker, Waker::noop().clone()),
            slot.task,
        ))
    }

    /// Grants every waiter; returns their wakers.
    pub(crate) fn grant_all(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::with_capacity(self.order.len());
        while let Some(waker) = self.grant_first() {
            wakers.push(waker);
        }
        wakers
    }

    /// A waiter runs again: `true` (and its slot freed) once granted; otherwise it keeps
    /// waiting with `waker`.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker) -> bool {
        let slot = self.slots.get_mut(key).expect("a waiter's slot exists");
        if slot.granted {
            self.slots.remove(key);
            return true;
        }
        if !slot.waker.will_wake(waker) {
            slot.waker.clone_from(waker);
        }
        false
    }

    /// A waiter gives up; returns whether it had been granted meanwhile (then the caller keeps
    /// or passes on the grant).
    pub(crate) fn withdraw(&mut self, key: usize) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        if !slot.granted
            && let Some(at) = self.order.iter().position(|k| *k == key)
        {
            self.order.remove(at);
        }
        slot.granted
    }
}
