# The command-line parsers this program tests are built on CLI11.
target_link_libraries(test_harness PRIVATE CLI11::CLI11)
