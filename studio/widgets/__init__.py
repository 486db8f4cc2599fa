"""Widgets of the studio: they present run state and never compute training results themselves."""
