//! The request state machine of the passthrough backend and its periph,
//! checked over every interleaving by an explicit state-space search.
//!
//! The model follows `src/backend/io.rs`, `src/periph/io.rs` and
//! `kern::cam::SharedPeriph`: an I/O CTL hands the backend enters the LUN's
//! shared periph, becomes a request in `incoming`, is started (`active`),
//! comes back through `done` to the done task, and finishes in three
//! steps: the request goes back to the periph's pool and the I/O is
//! completed, then the backend leaves the shared periph.  Around it, every
//! step may interleave with: CTL aborting the I/O (a TMF), the abort scan
//! (completing aborted `incoming` requests, sending XPT_ABORT for aborted
//! `active` ones, which CAM takes or refuses: a refused one is abandoned,
//! its request taking a periph reference and its I/O completed and left
//! while the CCB is still out, the request recycled and the reference
//! released once the CCB is back), the device being pulled
//! (`oninvalidate` failing `incoming`, the SIM ending `active` commands,
//! CAM dropping its own reference), and the backend's task letting the
//! periph go.
//!
//! Checked in every reachable state: the periph is never freed while a
//! request or an entered I/O still uses it; no I/O completes twice.  In
//! every state without a next step: every I/O completed exactly once,
//! every request is back, nobody is entered, no reference is held, and a
//! pulled device's periph is freed.  Three broken variants (leaving before
//! the request is back; letting go without waiting for the I/Os;
//! abandoning without a periph reference) must be caught.

use std::collections::HashSet;

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum At {
    /// CTL has not handed the I/O to the backend yet.
    NotSubmitted,
    /// Entered the shared periph; the request is being made.
    Entered,
    /// Waiting in `incoming` for a CCB.
    Incoming,
    /// Its CCB is with the device.
    Active { abort_sent: bool },
    /// Its CCB is with the device, its I/O taken out (abandoned); it holds
    /// a periph reference.
    Abandoned,
    /// Abandoned, its CCB back: in the done queue, to be recycled.
    Burying,
    /// In the done queue (or being resumed by the done task).
    Done,
    /// Back in the pool, the I/O completed; still entered.
    Released,
    /// (The broken order) left the shared periph, the request not yet
    /// back in the pool.
    Left,
    /// Left the shared periph.
    Gone,
    /// CTL handed it over while the periph was being let go: answered at
    /// once, never entered.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Req {
    at: At,
    /// CTL set `CTL_FLAG_ABORT`.
    aborted: bool,
    /// Times the I/O was completed.
    completions: u8,
    /// An abandoned request's I/O, on its own: taken out, completed, left.
    loose: Loose,
}

/// Where an abandoned request's I/O is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Loose {
    /// Not abandoned.
    No,
    /// Taken out of the request, to be completed (the lock dropped).
    Taken,
    /// Completed; still entered.
    Completed,
    /// Left the shared periph.
    Left,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    reqs: Vec<Req>,
    /// Entered I/Os (SharedPeriph's count).
    users: u8,
    /// SharedPeriph is letting go.
    letting_go: bool,
    /// The LUN still holds its periph reference.
    lun_ref: bool,
    /// CAM still holds the periph's initial reference.
    cam_ref: bool,
    /// References abandoned requests hold.
    holds: u8,
    /// The periph is valid (not invalidated).
    valid: bool,
    /// The backend's task saw the loss and let go.
    lost_handled: bool,
    /// TMFs still allowed (bounds the search).
    tmfs: u8,
    /// The device may still be pulled.
    can_unplug: bool,
}

/// A deliberately broken variant of the design.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Design,
    /// The backend leaves the shared periph before the request is back.
    LeaveFirst,
    /// Letting go releases the reference even with I/Os entered.
    LetGoAtOnce,
    /// An abandoned request takes no periph reference.
    AbandonUnheld,
}

impl State {
    fn new(requests: usize, tmfs: u8) -> State {
        State {
            reqs: vec![
                Req {
                    at: At::NotSubmitted,
                    aborted: false,
                    completions: 0,
                    loose: Loose::No,
                };
                requests
            ],
            users: 0,
            letting_go: false,
            lun_ref: true,
            cam_ref: true,
            holds: 0,
            valid: true,
            lost_handled: false,
            tmfs,
            can_unplug: true,
        }
    }

    fn periph_freed(&self) -> bool {
        !self.lun_ref && !self.cam_ref && self.holds == 0
    }

    /// A caller leaves; the last one out of a periph being let go takes the
    /// reference.
    fn leave(&mut self) {
        self.users -= 1;
        if self.letting_go && self.users == 0 {
            self.lun_ref = false;
        }
    }

    /// Every state one step away.
    fn next(&self, v: Variant) -> Vec<State> {
        let mut out = Vec::new();
        for i in 0..self.reqs.len() {
            let r = self.reqs[i];
            let mut s = self.clone();
            let step = |s: &mut State, at: At| s.reqs[i].at = at;
            match r.at {
                At::NotSubmitted if self.letting_go => {
                    // submit: enter fails; the I/O is answered at once.
                    step(&mut s, At::Refused);
                    s.reqs[i].completions += 1;
                    out.push(s);
                }
                At::NotSubmitted => {
                    s.users += 1;
                    step(&mut s, At::Entered);
                    out.push(s);
                }
                At::Entered => {
                    // issue, under the periph lock: an invalid periph sends
                    // the request to the done queue as if the device had
                    // gone.
                    step(&mut s, if self.valid { At::Incoming } else { At::Done });
                    out.push(s);
                }
                At::Incoming => {
                    // CAM gives a CCB (only to a valid periph).
                    if self.valid {
                        step(&mut s, At::Active { abort_sent: false });
                        out.push(s.clone());
                    }
                    // The abort scan completes an aborted queued request.
                    if r.aborted {
                        let mut s = self.clone();
                        step(&mut s, At::Done);
                        out.push(s);
                    }
                }
                At::Active { abort_sent } => {
                    // The CCB comes back (done, aborted, or the device gone).
                    step(&mut s, At::Done);
                    out.push(s);
                    if r.aborted && !abort_sent {
                        // The scan's XPT_ABORT, taken ...
                        let mut s = self.clone();
                        step(&mut s, At::Active { abort_sent: true });
                        out.push(s);
                        // ... or refused: abandoned, under the periph lock
                        // (the scan walks valid periphs).
                        if self.valid {
                            let mut s = self.clone();
                            step(&mut s, At::Abandoned);
                            s.reqs[i].loose = Loose::Taken;
                            if v != Variant::AbandonUnheld {
                                s.holds += 1;
                            }
                            out.push(s);
                        }
                    }
                }
                At::Abandoned => {
                    // Its CCB comes back, to the done task.
                    step(&mut s, At::Burying);
                    out.push(s);
                }
                At::Burying => {
                    // The done task recycles it, then releases its
                    // reference.
                    step(&mut s, At::Gone);
                    if v != Variant::AbandonUnheld {
                        s.holds -= 1;
                    }
                    out.push(s);
                }
                At::Done if v == Variant::LeaveFirst => {
                    // The broken order: leave, then give the request back.
                    step(&mut s, At::Left);
                    s.leave();
                    out.push(s);
                }
                At::Left => {
                    step(&mut s, At::Gone);
                    s.reqs[i].completions += 1;
                    out.push(s);
                }
                At::Done => {
                    // The done task finishes it: the request goes back and
                    // the I/O completes (aborted or not, exactly once) ...
                    step(&mut s, At::Released);
                    s.reqs[i].completions += 1;
                    out.push(s);
                }
                At::Released => {
                    // ... then it leaves the shared periph.
                    step(&mut s, At::Gone);
                    s.leave();
                    out.push(s);
                }
                At::Gone | At::Refused => {}
            }
            // An abandoned request's I/O: the scan completes it, then
            // leaves the shared periph.
            match r.loose {
                Loose::Taken => {
                    let mut s = self.clone();
                    s.reqs[i].loose = Loose::Completed;
                    s.reqs[i].completions += 1;
                    out.push(s);
                }
                Loose::Completed => {
                    let mut s = self.clone();
                    s.reqs[i].loose = Loose::Left;
                    s.leave();
                    out.push(s);
                }
                Loose::No | Loose::Left => {}
            }
            // CTL aborts an I/O it handed the backend (a TMF).
            let in_backend = !matches!(
                r.at,
                At::NotSubmitted | At::Released | At::Left | At::Gone | At::Refused | At::Abandoned | At::Burying
            );
            if in_backend && !r.aborted && self.tmfs > 0 {
                let mut s = self.clone();
                s.reqs[i].aborted = true;
                s.tmfs -= 1;
                out.push(s);
            }
        }
        if self.can_unplug {
            // The device is pulled: oninvalidate fails what waits in
            // incoming, the SIM ends the active commands (their CCBs still
            // come back through the same step), CAM drops its reference.
            let mut s = self.clone();
            s.can_unplug = false;
            s.valid = false;
            s.cam_ref = false;
            for r in &mut s.reqs {
                if r.at == At::Incoming {
                    r.at = At::Done;
                }
            }
            out.push(s);
        }
        if !self.valid && !self.lost_handled {
            // The backend's task lets the periph go.
            let mut s = self.clone();
            s.lost_handled = true;
            s.letting_go = true;
            if s.users == 0 || v == Variant::LetGoAtOnce {
                s.lun_ref = false;
            }
            out.push(s);
        }
        out
    }

    /// What must hold in every state.
    fn check(&self) -> Result<(), String> {
        for (i, r) in self.reqs.iter().enumerate() {
            if r.completions > 1 {
                return Err(format!("I/O {i} completed twice: {self:?}"));
            }
            let uses_periph = matches!(
                r.at,
                At::Entered | At::Incoming | At::Active { .. } | At::Abandoned | At::Burying | At::Done | At::Left
            );
            if uses_periph && self.periph_freed() {
                return Err(format!("the periph was freed under request {i}: {self:?}"));
            }
        }
        if self.users > 0 && self.periph_freed() {
            return Err(format!("the periph was freed with I/Os entered: {self:?}"));
        }
        Ok(())
    }

    /// What must hold where nothing can happen any more.
    fn check_final(&self) -> Result<(), String> {
        for (i, r) in self.reqs.iter().enumerate() {
            let loose_done = matches!(r.loose, Loose::No | Loose::Left);
            if r.completions != 1 || !matches!(r.at, At::Gone | At::Refused) || !loose_done {
                return Err(format!("I/O {i} did not end once and cleanly: {self:?}"));
            }
        }
        if self.users != 0 {
            return Err(format!("I/Os still entered at the end: {self:?}"));
        }
        if self.holds != 0 {
            return Err(format!("abandoned requests' references held at the end: {self:?}"));
        }
        if !self.valid && !self.periph_freed() {
            return Err(format!("a pulled device's periph is never freed: {self:?}"));
        }
        Ok(())
    }
}

/// Explores every state reachable from `start`; the number of states, or
/// the first violation.
fn explore(start: State, v: Variant) -> Result<usize, String> {
    let mut seen: HashSet<State> = HashSet::new();
    let mut stack = vec![start];
    while let Some(s) = stack.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        s.check()?;
        let next = s.next(v);
        if next.is_empty() {
            s.check_final()?;
        }
        stack.extend(next.into_iter().filter(|n| !seen.contains(n)));
    }
    Ok(seen.len())
}

#[test]
fn every_interleaving_of_four_requests_aborts_and_a_pulled_device_is_sound() {
    let states = explore(State::new(4, 4), Variant::Design).unwrap_or_else(|e| panic!("{e}"));
    // Every interleaving: four requests, each may be aborted (and its
    // abort taken or refused), one pull.
    assert_eq!(states, 708_578, "the model changed: update the figure in the README");
    eprintln!("interleavings: {states} states, no violation");
}

#[test]
fn leaving_before_the_request_is_back_is_caught() {
    let e = explore(State::new(2, 1), Variant::LeaveFirst).expect_err("a violation");
    assert!(e.contains("freed under request"), "{e}");
}

#[test]
fn abandoning_without_a_periph_reference_is_caught() {
    let e = explore(State::new(2, 1), Variant::AbandonUnheld).expect_err("a violation");
    assert!(e.contains("freed under request"), "{e}");
}

#[test]
fn letting_go_without_waiting_for_the_ios_is_caught() {
    let e = explore(State::new(2, 1), Variant::LetGoAtOnce).expect_err("a violation");
    assert!(e.contains("freed"), "{e}");
}
