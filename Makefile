# Convenience wrapper: every target runs ./dev (which needs no make).
.PHONY: setup lint test demo clean-demo
setup lint test demo clean-demo:
	./dev $@
