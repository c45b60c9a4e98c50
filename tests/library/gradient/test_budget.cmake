# BudgetWithoutMeter needs a process in which the CPU meter was never installed: its own entry, so
# that it runs in a fresh process whatever order or filter the whole program runs with.
add_test(NAME ${program}.without_meter COMMAND ${program} --gtest_filter=BudgetWithoutMeter.*)
set_tests_properties(${program}.without_meter PROPERTIES TIMEOUT 900 LABELS unit)
