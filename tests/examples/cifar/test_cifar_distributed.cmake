# Runs the anode-cifar program itself (data-parallel launch), so it needs the program built.
target_link_libraries(test_cifar_distributed PRIVATE CLI11::CLI11)
# (tests/ is configured before examples/, so the target is named, not tested for.)
if(ANODE_BUILD_EXAMPLES)
  add_dependencies(test_cifar_distributed anode-cifar)
  target_compile_definitions(test_cifar_distributed PRIVATE
                             ANODE_CIFAR_EXE="$<TARGET_FILE:anode-cifar>")
endif()
if(TARGET anode::distributed)
  target_link_libraries(test_cifar_distributed PRIVATE anode::distributed)
endif()
