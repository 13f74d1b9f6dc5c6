"""One module per dataset source: its published files with their checksums (and where those come
from), the layout it unpacks to, and the check of a folder holding it."""
