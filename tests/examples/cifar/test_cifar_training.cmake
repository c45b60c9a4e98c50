# The command-line parsers this program tests are built on CLI11.
target_link_libraries(${program} PRIVATE CLI11::CLI11)
# The trainer's data-parallel path, when anode found c10d and Gloo.
if(TARGET anode::distributed)
  target_link_libraries(${program} PRIVATE anode::distributed)
endif()
