# The trainer and tools/aiserve-train (issue 11).  Included by the Makefile.
#
#   make test-trainer    the trainer's unit test and the tool's end-to-end
#                        test (seconds, tiny models)

.PHONY: test-trainer

# t/unit/test_train_tool.c runs the command-line tool
$(BUILD)/t/test_train_tool: tools/aiserve-train

test-trainer: $(BUILD)/t/test_trainer $(BUILD)/t/test_train_tool
	prove --exec '' $^
