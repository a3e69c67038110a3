//! The GRUB environment block codec, shared with `flipslot-image disk` and defined in
//! [`flipslot_image::grubenv`].

pub use flipslot_image::grubenv::*;
