"""python -m fastrnn.bench: the report (fastrnn.bench.report.main)."""
from fastrnn.bench.report import main

if __name__ == "__main__":
    main()
