# Deployment of fine-tuned models (issue 12).  Included by the Makefile.
#
#   make test-deploy      the registry's and the shared encoder pass's unit
#                         tests and t/075-deploy.t
#   make bench-deploy     memory of 100 head and 100 LoRA models deployed
#                         over one base against full copies
#                         (tools/bench-deploy --help); a table for
#                         BENCHMARKS.md

.PHONY: test-deploy bench-deploy

test-deploy: module tools $(BUILD)/t/test_registry $(BUILD)/t/test_heads
	prove --exec '' $(BUILD)/t/test_registry $(BUILD)/t/test_heads
	prove -I t/lib t/075-deploy.t

bench-deploy: module tools
	python3 tools/bench-deploy $(BENCH_DEPLOY_ARGS)
