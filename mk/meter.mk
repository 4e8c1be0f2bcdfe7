# Metering targets (issue 5).  Included by the Makefile.
#
#   make test-meter                       ledger unit tests and the
#                                         t/05*-meter-*.t suites only
#   make bench-meter [BENCH_METER_ARGS=]  aiserve_meter on vs off, same
#                                         nginx and run (tools/bench-meter
#                                         --help), then the ledger's cost
#                                         per operation (tools/bench-ledger);
#                                         tables for BENCHMARKS.md

.PHONY: test-meter bench-meter

test-meter: module tools $(BUILD)/t/test_ledger $(BUILD)/t/test_accounts \
            $(UNIT_HELPERS)
	prove --exec '' $(BUILD)/t/test_ledger $(BUILD)/t/test_accounts
	prove -I t/lib t/05*-meter-*.t

bench-meter: module tools tools/bench-ledger
	tools/bench-meter $(BENCH_METER_ARGS)
	tools/bench-ledger

tools/bench-ledger: tools/bench-ledger.c $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)
