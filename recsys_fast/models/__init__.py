"""Recommenders on one protocol (see ``base``); ``registry`` maps saved kinds to classes."""
