# The command-line parsers this program tests are built on CLI11.
target_link_libraries(${program} PRIVATE CLI11::CLI11)
