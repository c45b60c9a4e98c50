# BudgetWithoutMeter needs a process in which the CPU meter was never installed: its own entry, so
# that it runs in a fresh process whatever order or filter the whole program runs with.
add_test(NAME test_budget.without_meter COMMAND test_budget --gtest_filter=BudgetWithoutMeter.*)
set_tests_properties(test_budget.without_meter PROPERTIES TIMEOUT 900 LABELS unit)
