//! The side-effect seams: system calls, fixed paths under a root, the clock, failpoints
//! and the mount table. Everything above this room reaches the host through it.

pub mod clock;
pub mod disks;
pub mod failpoint;
pub mod mountinfo;
pub mod paths;
pub mod sys;
