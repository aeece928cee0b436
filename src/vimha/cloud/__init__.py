"""The embedded cloud behind `vimha up` (and, later, `vimha chaos`)."""
