//! See the module list in [`crate::image`].
