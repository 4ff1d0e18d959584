"""Developer and demo tools: benchmarks, the chaos proof and the demo. Product code never
imports these."""
