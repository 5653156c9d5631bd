# libFuzzer targets (issue 3, "Hardening"). Included by the top-level
# CMakeLists when -DVERDANT_BUILD_FUZZ=ON; needs clang:
#   CC=clang CXX=clang++ cmake -S . -B /work/build-fuzz -G Ninja \
#     -DVERDANT_BUILD_FUZZ=ON -DVERDANT_WITH_TORCH=OFF -DVERDANT_BUILD_TESTS=OFF
#   cmake --build /work/build-fuzz --target verdant_fuzz
# scripts/fuzz.sh does both and runs each target for a bounded time.
#
# Every fuzz/*_fuzz.cc becomes an executable linked with
# -fsanitize=fuzzer,address,undefined; the code under test (core, transport)
# is compiled with coverage instrumentation and the same sanitizers.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "VERDANT_BUILD_FUZZ needs clang (libFuzzer): CC=clang CXX=clang++")
endif()

set(VERDANT_FUZZ_SANITIZERS "address,undefined" CACHE STRING "Sanitizers for the fuzz targets")
set(_fuzz_flags -fsanitize=${VERDANT_FUZZ_SANITIZERS} -fno-sanitize-recover=undefined
                -fno-omit-frame-pointer -g)

# Instrument the libraries under test for coverage feedback.
foreach(_lib verdant_core verdant_transport)
  target_compile_options(${_lib} PRIVATE -fsanitize=fuzzer-no-link ${_fuzz_flags})
endforeach()

file(GLOB _fuzz_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/*_fuzz.cc)
add_custom_target(verdant_fuzz)
foreach(_src ${_fuzz_srcs})
  get_filename_component(_name ${_src} NAME_WE)
  add_executable(${_name} ${_src})
  target_compile_options(${_name} PRIVATE -fsanitize=fuzzer ${_fuzz_flags} ${VERDANT_WARNINGS})
  target_link_options(${_name} PRIVATE -fsanitize=fuzzer ${_fuzz_flags})
  target_link_libraries(${_name} PRIVATE verdant::transport)
  add_dependencies(verdant_fuzz ${_name})
endforeach()

# Seed generator (plain executable; its output is committed under fuzz/corpus).
add_executable(verdant_fuzz_seeds ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/make_seeds.cc)
target_compile_options(verdant_fuzz_seeds PRIVATE ${_fuzz_flags})
target_link_options(verdant_fuzz_seeds PRIVATE ${_fuzz_flags})
target_link_libraries(verdant_fuzz_seeds PRIVATE verdant::transport)
