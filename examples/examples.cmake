# examples/examples.cmake — included by the top-level CMakeLists.txt.
#
# Example plug-ins, built as shared libraries (MODULE) and run by CTest.
#
# How a plug-in gets Verdant's code: it links the (position-independent)
# static module libraries it uses, here verdant::aggregation (which brings
# core and compression), and hides them with --exclude-libs so that its
# private copies never interpose on the host's symbols or vice versa. The
# host therefore needs no -rdynamic/ENABLE_EXPORTS, and the same .so loads
# into `verdant`, the simulator or a test driver. Everything crossing the
# boundary (Strategy vtables, OptionMap, Status, Result, std::string,
# std::vector) comes from the same headers and the shared libstdc++, which is
# what VERDANT_PLUGIN_ABI_VERSION stands for. Registration goes through the
# host's registries via the C entry point, so the plug-in's own copies of the
# registries stay unused.

# verdant_add_plugin(TARGET SOURCES...): a Verdant plug-in shared library.
function(verdant_add_plugin target)
  add_library(${target} MODULE ${ARGN})
  target_link_libraries(${target} PRIVATE verdant::aggregation)
  target_compile_options(${target} PRIVATE ${VERDANT_WARNINGS})
  set_target_properties(${target} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/examples)
  target_link_options(${target} PRIVATE -Wl,--exclude-libs,ALL -Wl,--no-undefined)
endfunction()

# ---- custom_strategy: a one-file strategy plug-in ------------------------------
verdant_add_plugin(verdant_clipped_mean
  ${CMAKE_CURRENT_LIST_DIR}/custom_strategy/clipped_mean_strategy.cc)

# A small driver that loads a strategy plug-in and runs it beside FedAvg on a
# synthetic task (until `verdant demo --plugin` runs a real federated round).
add_executable(run_strategy_plugin ${CMAKE_CURRENT_LIST_DIR}/custom_strategy/run_plugin.cc)
target_link_libraries(run_strategy_plugin PRIVATE verdant::aggregation ${CMAKE_DL_LIBS})
target_compile_options(run_strategy_plugin PRIVATE ${VERDANT_WARNINGS})
add_dependencies(run_strategy_plugin verdant_clipped_mean)

if(VERDANT_BUILD_TESTS)
  add_test(NAME examples.custom_strategy
           COMMAND run_strategy_plugin $<TARGET_FILE:verdant_clipped_mean> clippedmean
                   clip_norm=5 decay=0.1)
  set_tests_properties(examples.custom_strategy PROPERTIES LABELS "examples" TIMEOUT 120)
endif()

# The CLI's end-to-end tests load the example through `verdant demo --plugin`.
if(TARGET verdant_integration_tests)
  target_compile_definitions(verdant_integration_tests PRIVATE
    VERDANT_EXAMPLE_PLUGIN="$<TARGET_FILE:verdant_clipped_mean>")
  add_dependencies(verdant_integration_tests verdant_clipped_mean)
endif()

# ---- broken plug-ins for tests/aggregation/plugin_test.cc -----------------------
if(TARGET verdant_aggregation_tests)
  set(_tp_src ${CMAKE_SOURCE_DIR}/tests/aggregation/plugins/test_plugin.cc)
  foreach(_mode 1 2 3 4)
    verdant_add_plugin(verdant_test_plugin_${_mode} ${_tp_src})
    target_compile_definitions(verdant_test_plugin_${_mode} PRIVATE VERDANT_TEST_PLUGIN_MODE=${_mode})
    add_dependencies(verdant_aggregation_tests verdant_test_plugin_${_mode})
  endforeach()
  add_dependencies(verdant_aggregation_tests verdant_clipped_mean)
  target_compile_definitions(verdant_aggregation_tests PRIVATE
    VERDANT_TEST_PLUGIN_DIR="${CMAKE_BINARY_DIR}/examples")
  target_link_libraries(verdant_aggregation_tests PRIVATE ${CMAKE_DL_LIBS})
endif()
