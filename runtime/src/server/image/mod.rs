//! ImageService RPCs, one file each.

pub mod image_fs_info;
