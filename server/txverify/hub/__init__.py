"""The hub: the central router that forwards slip inquiries to issuers."""
