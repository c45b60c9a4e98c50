# Data parallelism: only with c10d and Gloo (ANODE_WITH_DISTRIBUTED); else the program only skips.
if(ANODE_WITH_DISTRIBUTED)
  target_link_libraries(test_distributed PRIVATE anode::distributed)
endif()
