//! Singly-linked tail queues of boxed elements (queue(3)'s `STAILQ`): the
//! link lives in the element, so queueing never allocates and cannot fail,
//! which the I/O path needs where it holds a mutex or runs in a CAM
//! completion.

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;

use super::alloc::KBox;

/// The link an element of a [`Stailq`] embeds (`STAILQ_ENTRY`).
pub struct Link<T> {
    next: Cell<Option<NonNull<T>>>,
}

impl<T> Link<T> {
    /// A link of an element on no queue.
    pub const fn new() -> Link<T> {
        Link { next: Cell::new(None) }
    }
}

impl<T> Default for Link<T> {
    fn default() -> Self {
        Link::new()
    }
}

// SAFETY: a link is only read and written by the queue that owns the
// element, through that queue.
unsafe impl<T: Send> Send for Link<T> {}

/// An element type with an embedded [`Link`].
///
/// # Safety
///
/// `link` returns the same field of `self` every time.
pub unsafe trait Linked: Sized {
    /// The element's link.
    fn link(&self) -> &Link<Self>;
}

/// A FIFO of boxed elements that owns them: dropping the queue drops them.
pub struct Stailq<T: Linked> {
    head: Option<NonNull<T>>,
    tail: Option<NonNull<T>>,
    len: usize,
    owns: PhantomData<KBox<T>>,
}

// SAFETY: the queue owns its elements like a collection of KBoxes.
unsafe impl<T: Linked + Send> Send for Stailq<T> {}
// SAFETY: a shared queue only reads its length.
unsafe impl<T: Linked + Sync> Sync for Stailq<T> {}

impl<T: Linked> Stailq<T> {
    /// An empty queue.
    pub const fn new() -> Stailq<T> {
        Stailq {
            head: None,
            tail: None,
            len: 0,
            owns: PhantomData,
        }
    }

    /// How many elements are queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Appends `elem` (`STAILQ_INSERT_TAIL`).
    pub fn push_back(&mut self, elem: KBox<T>) {
        elem.link().next.set(None);
        let new = NonNull::from(KBox::leak(elem));
        match self.tail {
            // SAFETY: the tail is an element this queue owns.
            Some(tail) => unsafe { tail.as_ref().link().next.set(Some(new)) },
            None => self.head = Some(new),
        }
        self.tail = Some(new);
        self.len = self.len.saturating_add(1);
    }

    /// Removes and returns the first element (`STAILQ_REMOVE_HEAD`).
    pub fn pop_front(&mut self) -> Option<KBox<T>> {
        let head = self.head?;
        // SAFETY: the head is an element this queue owns, leaked from a KBox
        // by push_back; ownership returns to the caller.
        let elem = unsafe { KBox::from_raw(head.as_ptr()) };
        self.head = elem.link().next.take();
        if self.head.is_none() {
            self.tail = None;
        }
        self.len = self.len.saturating_sub(1);
        Some(elem)
    }

    /// Moves every element of `other` to the end of this queue
    /// (`STAILQ_CONCAT`).
    pub fn append(&mut self, other: &mut Stailq<T>) {
        let (Some(first), Some(last)) = (other.head.take(), other.tail.take()) else {
            return;
        };
        match self.tail {
            // SAFETY: the tail is an element this queue owns.
            Some(tail) => unsafe { tail.as_ref().link().next.set(Some(first)) },
            None => self.head = Some(first),
        }
        self.tail = Some(last);
        self.len = self.len.saturating_add(core::mem::take(&mut other.len));
    }

    /// The first element `pred` accepts.
    pub fn find_mut(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let mut cur = self.head;
        while let Some(mut p) = cur {
            // SAFETY: an element this queue owns; `&mut self` makes the
            // returned reference unique.
            let elem = unsafe { p.as_mut() };
            if pred(elem) {
                return Some(elem);
            }
            cur = elem.link().next.get();
        }
        None
    }

    /// Removes and returns the first element `pred` accepts
    /// (`STAILQ_REMOVE`).
    pub fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<KBox<T>> {
        let mut prev: Option<NonNull<T>> = None;
        let mut cur = self.head;
        while let Some(p) = cur {
            // SAFETY: an element this queue owns.
            let elem = unsafe { p.as_ref() };
            let next = elem.link().next.get();
            if pred(elem) {
                match prev {
                    // SAFETY: the previous element, owned by this queue.
                    Some(q) => unsafe { q.as_ref().link().next.set(next) },
                    None => self.head = next,
                }
                if self.tail == Some(p) {
                    self.tail = prev;
                }
                self.len = self.len.saturating_sub(1);
                // SAFETY: unlinked above; ownership returns to the caller as
                // the KBox push_back leaked.
                let elem = unsafe { KBox::from_raw(p.as_ptr()) };
                elem.link().next.set(None);
                return Some(elem);
            }
            prev = cur;
            cur = next;
        }
        None
    }

    /// Takes every element, leaving this queue empty.
    pub fn take(&mut self) -> Stailq<T> {
        core::mem::take(self)
    }
}

impl<T: Linked> Default for Stailq<T> {
    fn default() -> Self {
        Stailq::new()
    }
}

impl<T: Linked> IntoIterator for Stailq<T> {
    type Item = KBox<T>;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter(self)
    }
}

/// The elements of a queue, first to last, each taken off as it is
/// returned.
pub struct IntoIter<T: Linked>(Stailq<T>);

impl<T: Linked> Iterator for IntoIter<T> {
    type Item = KBox<T>;
    fn next(&mut self) -> Option<KBox<T>> {
        self.0.pop_front()
    }
}

impl<T: Linked> Drop for Stailq<T> {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}
