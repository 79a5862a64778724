"""`python -m producer`: the same entry point as `python producer/transaction_producer.py`."""

from producer.transaction_producer import main

raise SystemExit(main())
