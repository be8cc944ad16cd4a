"""``python -m key_store``: serve the key store; ``python -m key_store periods``: list the periods and their
state (never a key); ``python -m key_store destroy <period>``: destroy a period key now, refused before its
end plus the grace (docs/runbooks.md, "Key store")."""

from key_store.app import main

main()
