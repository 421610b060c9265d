# The ctest consumer_find_package (cmake -P): installs the build in
# BUILD_DIR into WORK_DIR/prefix, then configures, builds and runs
# examples/consumer against it with find_package(kpalloc), and builds and
# runs its main.c again with the flags of `pkg-config --cflags --libs kpalloc`.
cmake_minimum_required(VERSION 3.19)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${what}:\n${out}${err}")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "consumer_find_package: ${what} failed (${result})")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

function(expect_clean what)
  if(NOT run_output MATCHES "consumer finished: 0 errors")
    message(FATAL_ERROR "consumer_find_package: ${what} did not finish cleanly")
  endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})

run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(file include/kpalloc.h lib/libkpalloc.a lib/cmake/kpalloc/kpallocConfig.cmake
    lib/cmake/kpalloc/kpallocConfigVersion.cmake lib/pkgconfig/kpalloc.pc)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "consumer_find_package: ${file} was not installed")
  endif()
endforeach()
if(EXPECT_PINTOS AND NOT EXISTS ${prefix}/include/kpalloc_pintos.h)
  message(FATAL_ERROR "consumer_find_package: kpalloc_pintos.h was not installed")
endif()

# find_package, from a tree that knows nothing of the source tree.
run("configure the consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${WORK_DIR}/build
  -G "${GENERATOR}" -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_PREFIX_PATH=${prefix}
  -DKPALLOC_EXPECT_PINTOS=${EXPECT_PINTOS})
run("build the consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run("run the consumer" ${WORK_DIR}/build/consumer)
expect_clean("the find_package consumer")
if(EXPECT_PINTOS)
  run("run the Pintos consumer" ${WORK_DIR}/build/consumer_pintos)
  expect_clean("the Pintos consumer")
endif()

# pkg-config, with the .pc file found through PKG_CONFIG_PATH alone.
if(NOT PKG_CONFIG)
  message(FATAL_ERROR "consumer_find_package: pkg-config not found")
endif()
set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
run("pkg-config --modversion" ${PKG_CONFIG} --modversion kpalloc)
string(STRIP "${run_output}" version)
if(NOT version STREQUAL "0.1.0")
  message(FATAL_ERROR "consumer_find_package: pkg-config says version '${version}'")
endif()
run("pkg-config --cflags --libs" ${PKG_CONFIG} --cflags --libs kpalloc)
string(STRIP "${run_output}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run("cc with pkg-config flags" ${C_COMPILER} -Wall -Wextra -Werror -std=c11
  ${SOURCE_DIR}/examples/consumer/main.c ${flags} -o ${WORK_DIR}/consumer_pc)
run("run the pkg-config consumer" ${WORK_DIR}/consumer_pc)
expect_clean("the pkg-config consumer")

message("consumer_find_package: all checks passed")
