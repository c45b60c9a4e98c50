# Runs the anode-cifar program itself (data-parallel launch), so it needs the program built.
target_link_libraries(test_cifar_distributed PRIVATE CLI11::CLI11)
if(TARGET anode-cifar)
  add_dependencies(test_cifar_distributed anode-cifar)
  target_compile_definitions(test_cifar_distributed PRIVATE
                             ANODE_CIFAR_EXE="$<TARGET_FILE:anode-cifar>")
endif()
if(TARGET anode::distributed)
  target_link_libraries(test_cifar_distributed PRIVATE anode::distributed)
endif()
